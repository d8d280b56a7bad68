"""May the target's database user write the tables a load touches?

Checked before anything is written (the load's preflight) and, in ``bundler migrate``,
before any root is marked Exported in the source: a target that refuses the writes would
otherwise leave roots Exported with nowhere to go.

- PostgreSQL: ``has_table_privilege`` (roles and ``PUBLIC`` included) for INSERT and UPDATE;
- MariaDB: the privileges ``information_schema`` shows for the current user and its enabled
  roles, globally, on the database (patterns included) and per table;
- SQLite: the database file (and its folder, for the journal) is writable.

Every table lacking a privilege is listed at once (exit 5).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path

import sqlalchemy as sa

from bundler.errors import PrerequisitesMissing

#: what a load does to the tables it touches: insert rows, update references and statuses
PRIVILEGES = ("INSERT", "UPDATE")


def load_tables(graph_tables: Iterable[str]) -> list[str]:
    """The tables a load writes: the given ones and the load's own records (ledger, loads)."""
    from bundler import tracking

    return sorted({*graph_tables, tracking.loads_table.name, tracking.ledger_table.name})


def check_write_access(connection: sa.Connection, tables: Iterable[str], *, what: str) -> None:
    """Raise :class:`PrerequisitesMissing` naming every table of ``tables`` the user may not write."""
    wanted = sorted(set(tables))
    dialect = connection.dialect.name
    if dialect == "sqlite":
        refused = _sqlite_refused(connection, wanted)
    elif dialect == "postgresql":
        refused = _postgresql_refused(connection, wanted)
    elif dialect in ("mysql", "mariadb"):
        refused = _mysql_refused(connection, wanted)
    else:
        return
    if refused:
        user = _user(connection)
        raise PrerequisitesMissing(
            f"{what}: the target's database user {user} may not write {len(refused)} table(s) the load "
            f"touches: {'; '.join(refused)}",
            hint=f"grant {' and '.join(PRIVILEGES)} on them to {user}, or connect as a user that has them; "
            "nothing was marked or written",
        )


def _user(connection: sa.Connection) -> str:
    if connection.dialect.name == "sqlite":
        return "(the file's owner)"
    return str(connection.execute(sa.text("SELECT current_user")).scalar_one())


def _sqlite_refused(connection: sa.Connection, tables: list[str]) -> list[str]:
    path = connection.engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return []
    folder = os.path.dirname(os.path.abspath(path))
    problems = []
    if os.path.exists(path) and not os.access(path, os.W_OK):
        problems.append(f"the database file {path} is read-only")
    if not os.access(folder, os.W_OK):
        problems.append(f"its folder {folder} is read-only (SQLite writes its journal there)")
    return [f"all ({p})" for p in problems]


def _postgresql_refused(connection: sa.Connection, tables: list[str]) -> list[str]:
    checks = ", ".join(f"has_table_privilege(c.oid, '{p}') AS {p.lower()}" for p in PRIVILEGES)
    rows = connection.execute(
        sa.text(
            f"SELECT c.relname, {checks} FROM pg_class c "
            "WHERE c.relname = ANY(:names) AND pg_table_is_visible(c.oid) AND c.relkind IN ('r', 'p')"
        ),
        {"names": tables},
    ).mappings()
    refused = []
    for row in sorted(rows, key=lambda r: r["relname"]):
        lacking = [p for p in PRIVILEGES if not row[p.lower()]]
        if lacking:
            refused.append(f"{row['relname']} ({', '.join(lacking)})")
    return refused


def _mysql_refused(connection: sa.Connection, tables: list[str]) -> list[str]:
    user, _, host = str(connection.execute(sa.text("SELECT current_user()")).scalar_one()).rpartition("@")
    grantees = {f"'{user}'@'{host}'"}
    try:
        roles = connection.execute(sa.text("SELECT role_name FROM information_schema.enabled_roles"))
        grantees |= {f"'{r}'" for (r,) in roles} | {f"'{r}'@''" for (r,) in roles}
    except sa.exc.DBAPIError:
        pass  # a server without roles
    names = sorted(grantees)
    params = {f"g{i}": g for i, g in enumerate(names)}
    among = ", ".join(f":g{i}" for i in range(len(names)))
    database = connection.execute(sa.text("SELECT database()")).scalar_one()
    held = {
        p
        for (p,) in connection.execute(
            sa.text(
                f"SELECT privilege_type FROM information_schema.user_privileges WHERE grantee IN ({among})"
            ),
            params,
        )
    }
    for schema, privilege in connection.execute(
        sa.text(
            "SELECT table_schema, privilege_type FROM information_schema.schema_privileges "
            f"WHERE grantee IN ({among})"
        ),
        params,
    ):
        if _schema_matches(schema, database):
            held.add(privilege)
    per_table: dict[str, set[str]] = {}
    for table, privilege in connection.execute(
        sa.text(
            "SELECT table_name, privilege_type FROM information_schema.table_privileges "
            f"WHERE grantee IN ({among}) AND table_schema = database()"
        ),
        params,
    ):
        per_table.setdefault(table, set()).add(privilege)
    refused = []
    for table in tables:
        lacking = [p for p in PRIVILEGES if p not in held and p not in per_table.get(table, set())]
        if lacking:
            refused.append(f"{table} ({', '.join(lacking)})")
    return refused


def _schema_matches(pattern: str, database: str) -> bool:
    """A database-level grant names the database, or a LIKE pattern (``%``, ``_``, ``\\_``) for it."""
    if pattern == database:
        return True
    glob = ""
    escaped = False
    for ch in pattern:
        if escaped:
            glob += "[" + ch + "]"
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            glob += "*"
        elif ch == "_":
            glob += "?"
        elif ch in "[]*?":
            glob += "[" + ch + "]"
        else:
            glob += ch
    return fnmatchcase(database, glob)


def check_target_writable(
    connection: sa.Connection, spec: str | Path | None, *, extra: Iterable[str] = (), what: str
) -> None:
    """Before a migration marks anything: the user may write every table a load into this
    target can touch (its graph's copied tables, the load's records and ``extra``)."""
    from bundler.context import database_graph
    from bundler.errors import BundlerError

    try:
        graph = database_graph(connection, spec)
    except BundlerError:
        return  # a target that does not know its release yet: the load checks what it touches
    tables = [t.name for t in graph.tables.values() if t.is_copied]
    check_write_access(connection, [*load_tables(tables), *extra], what=what)
