"""What a command resolves once and every step then shares: the entity graph of a
database (with the database's identity) and the graph a bundle was written with.

One rule for each, so that no verb works it out again in its own way:

- a database's graph is ``--spec`` when given, else the shipped graph of the release the
  database recorded (``bundler db init``); a database with no record yet is registered
  under the ``--spec`` graph's release;
- a bundle's graph is the graph of the release the bundle names: ``--spec`` when it
  describes that release (a foreign schema has no shipped graph), else the shipped one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bundler.errors import SpecError
from bundler.graph import Graph, graph_for_release, load_graph

if TYPE_CHECKING:  # SQLAlchemy is imported where a database is used: `inspect` needs none
    import sqlalchemy as sa

    from bundler.tracking import SystemInfo


def system_graph(
    connection: sa.Connection, spec: str | Path | None, *, create: bool = True
) -> tuple[Graph, SystemInfo]:
    """The graph to work on a source or target database with, and the database's identity.

    ``create=False`` (a plan) writes nothing: no bundler table is made, and a database not
    registered yet is given the ``--spec`` graph's release under :data:`~bundler.tracking.UNREGISTERED`."""
    import sqlalchemy as sa

    from bundler import tracking

    if create:
        tracking.ensure_tables(connection)
    if spec is not None:
        graph = load_graph(spec)
        fits_database(connection, graph)
        registered = sa.inspect(connection).has_table(tracking.system_table.name) and (
            connection.execute(sa.select(tracking.system_table)).first() is not None
        )
        if not registered:
            if not create:
                return graph, tracking.SystemInfo(
                    tracking.UNREGISTERED, graph.release, connection.dialect.name
                )
            return graph, tracking.register_system(connection, graph.release)
        return graph, tracking.read_system(connection)
    system = tracking.read_system(connection)
    return graph_for_release(system.release), system


_FITTED: set[tuple[str, str]] = set()


def fits_database(connection: sa.Connection, graph: Graph) -> None:
    """Refuse a ``--spec`` graph that names tables or columns the database lacks (every
    one of them, with the role the graph gives it), before any work; checked once per
    database and graph."""
    from bundler.graphtools.check import require_columns

    key = (connection.engine.url.render_as_string(hide_password=True), graph.sha256)
    if key in _FITTED:
        return
    require_columns(connection, graph, connection.dialect.name)
    _FITTED.add(key)


def database_graph(connection: sa.Connection, spec: str | Path | None) -> Graph:
    """The graph of a database that must already know its release (nothing is created)."""
    from bundler import tracking

    if spec is not None:
        graph = load_graph(spec)
        fits_database(connection, graph)
        return graph
    return graph_for_release(tracking.read_system(connection).release)


def bundle_graph(release: object, spec: str | Path | None = None) -> Graph:
    """The graph of the release a bundle was written with (``--spec`` when it is that release)."""
    if not isinstance(release, str) or not release:
        raise SpecError("the manifest names no graph release", hint="give the entity graph with --spec PATH")
    if spec is not None:
        graph = load_graph(spec)
        if graph.release == release:
            return graph
    return graph_for_release(release)
