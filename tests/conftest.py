"""Database fixtures for the whole test suite.

SQLite is always there. PostgreSQL and MariaDB come from URLs:

- ``BUNDLER_TEST_PG_URL`` and ``BUNDLER_TEST_MYSQL_URL`` name them; when a variable is
  unset, the local defaults below are probed (3 s connect timeout) and used if they
  answer; ``none`` leaves that server out.
- The probe runs once per test run (in the xdist controller, whose result the workers
  receive), never per test.
- A test that needs a missing server is skipped ("PostgreSQL not reachable (set
  BUNDLER_TEST_PG_URL)") and the run ends with a summary of those skips; with
  ``BUNDLER_TEST_REQUIRE_SERVERS=1`` (CI) it fails instead.

Fixtures:

- ``dialect``: parametrized over ``"sqlite"``, ``"postgresql"``, ``"mysql"`` (test ids
  ``sqlite``, ``postgresql``, ``mariadb``); server cases carry the ``servers`` marker.
- ``new_db``: a factory ``new_db(dialect: str | None = None) -> str`` creating a fresh,
  uniquely named database (``bt_<10 hex>``) and returning its URL; the default dialect
  is the test's ``dialect`` if it uses that fixture, else SQLite. Everything it created
  is dropped at teardown, after the engines connected to it are disposed.
- ``db_url``: ``new_db()``, a fresh database of the current dialect.
- ``engine``: ``bundler.db.connect(db_url)``, disposed at teardown.
- ``server_url``: where ``create_database`` makes databases for the current dialect.
"""

from __future__ import annotations

import json
import os
import uuid
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

REQUIRE_ENV = "BUNDLER_TEST_REQUIRE_SERVERS"
_REQUIRED_TAG = f"[{REQUIRE_ENV}=1 requires every database server]"
PROBE_TIMEOUT_S = 3
_WORKER_KEY = "bundler_test_servers"


@dataclass(frozen=True)
class ServerSpec:
    """A database server the tests can use, and how it is found."""

    dialect: str
    label: str
    env: str
    default_url: str


SERVERS: dict[str, ServerSpec] = {
    "postgresql": ServerSpec(
        "postgresql",
        "PostgreSQL",
        "BUNDLER_TEST_PG_URL",
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    ),
    "mysql": ServerSpec(
        "mysql", "MariaDB", "BUNDLER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"
    ),
}

_ALIASES = {"mariadb": "mysql", "postgres": "postgresql"}

# Probe results for this process: dialect -> {"url": str | None, "reason": str | None}.
_status: dict[str, dict[str, str | None]] | None = None

# Every engine that opened a connection during the run, so teardown can dispose them.
_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def _probe(spec: ServerSpec) -> dict[str, str | None]:
    from bundler.db import connect, redact

    configured = os.environ.get(spec.env, "").strip()
    if configured.lower() == "none":
        return {"url": None, "reason": f"{spec.label} left out ({spec.env}=none)"}
    url = configured or spec.default_url
    try:
        connect(url, connect_timeout=PROBE_TIMEOUT_S).dispose()
    except Exception as exc:
        if configured:
            cause = exc.__cause__ or exc
            lines = str(getattr(cause, "orig", None) or cause).strip().splitlines()
            detail = lines[0] if lines else type(cause).__name__
            return {
                "url": None,
                "reason": f"{spec.label} not reachable at {redact(url)} ({spec.env}): {detail}",
            }
        return {"url": None, "reason": f"{spec.label} not reachable (set {spec.env})"}
    return {"url": url, "reason": None}


def _servers(config: pytest.Config) -> dict[str, dict[str, str | None]]:
    """The probe results, computed once per run (xdist workers receive the controller's)."""
    global _status
    if _status is None:
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None and _WORKER_KEY in workerinput:
            _status = json.loads(workerinput[_WORKER_KEY])
        else:
            _status = {name: _probe(spec) for name, spec in SERVERS.items()}
    return _status


def _canonical(dialect: str) -> str:
    name = _ALIASES.get(dialect, dialect)
    if name != "sqlite" and name not in SERVERS:
        raise ValueError(f"unknown dialect {dialect!r}; use sqlite, postgresql or mysql")
    return name


def require_server(config: pytest.Config, dialect: str) -> str:
    """The URL of the server for ``dialect``; skips (or fails, under REQUIRE) without one."""
    status = _servers(config)[_canonical(dialect)]
    url, reason = status["url"], status["reason"]
    if url is None:
        message = reason or f"{dialect} not available"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message} {_REQUIRED_TAG}", pytrace=False)
        pytest.skip(message)
    return url


# -- hooks ------------------------------------------------------------------------------


def _track_engine(conn: Connection) -> None:
    _engines.add(conn.engine)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "servers: needs PostgreSQL or MariaDB (run SQLite only with -m 'not servers')"
    )
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not event.contains(Engine, "engine_connect", _track_engine):
        event.listen(Engine, "engine_connect", _track_engine)


def pytest_unconfigure(config: pytest.Config) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if event.contains(Engine, "engine_connect", _track_engine):
        event.remove(Engine, "engine_connect", _track_engine)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand the probe results to each worker, so servers are probed once."""
    node.workerinput[_WORKER_KEY] = json.dumps(_servers(node.config))


def pytest_report_header(config: pytest.Config) -> str:
    parts = ["sqlite"]
    for name, status in _servers(config).items():
        label = "mariadb" if name == "mysql" else name
        if status["url"]:
            from bundler.db import redact

            parts.append(f"{label} ({redact(status['url'])})")
        else:
            parts.append(f"{label}: {status['reason']}")
    required = " [all required]" if os.environ.get(REQUIRE_ENV) == "1" else ""
    return "databases: " + "; ".join(parts) + required


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("dialect") in SERVERS:
            item.add_marker(pytest.mark.servers)


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """A required server that is missing fails the test (not "error", as fixtures would)."""
    if report.when == "setup" and report.failed and _REQUIRED_TAG in str(report.longrepr):
        return "failed", "F", "FAILED"
    return None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line per missing server: how many tests were skipped, and why."""
    labels = tuple(spec.label + " " for spec in SERVERS.values())
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reason = str(longrepr[2]).removeprefix("Skipped: ")
            if reason.startswith(labels):
                reasons[reason] += 1
    if reasons:
        terminalreporter.write_sep("-", "database servers")
        for reason, count in sorted(reasons.items()):
            terminalreporter.write_line(f"{count} test(s) skipped: {reason}")


# -- fixtures ---------------------------------------------------------------------------


class NewDb(Protocol):
    """The ``new_db`` fixture's factory."""

    def __call__(self, dialect: str | None = None) -> str: ...


@pytest.fixture(params=["sqlite", "postgresql", "mysql"], ids=["sqlite", "postgresql", "mariadb"])
def dialect(request: pytest.FixtureRequest) -> str:
    """The dialect under test; server dialects skip (or fail) when their server is missing."""
    name: str = request.param
    if name != "sqlite":
        require_server(request.config, name)
    return name


def _unique_name() -> str:
    return "bt_" + uuid.uuid4().hex[:10]


def _dispose_engines_on(urls: list[str]) -> None:
    from sqlalchemy.engine import make_url

    targets = {(make_url(u).get_backend_name(), make_url(u).database) for u in urls}
    for engine in list(_engines):
        if (engine.url.get_backend_name(), engine.url.database) in targets:
            engine.dispose()


@pytest.fixture
def server_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where databases of the current dialect (default SQLite) are created: a URL or a folder."""
    name = request.getfixturevalue("dialect") if "dialect" in request.fixturenames else "sqlite"
    if name == "sqlite":
        return str(tmp_path_factory.mktemp("sqlite"))
    return require_server(request.config, name)


@pytest.fixture
def new_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NewDb]:
    """Factory of fresh databases, all dropped at teardown."""
    from bundler.db import create_database, drop_database, redact

    default = request.getfixturevalue("dialect") if "dialect" in request.fixturenames else "sqlite"
    created: list[str] = []
    sqlite_dir: list[Path] = []

    def factory(dialect: str | None = None) -> str:
        name = _canonical(dialect or default)
        if name == "sqlite":
            if not sqlite_dir:
                sqlite_dir.append(tmp_path_factory.mktemp("sqlite"))
            server: str = str(sqlite_dir[0])
        else:
            server = require_server(request.config, name)
        url = create_database(server, _unique_name())
        created.append(url)
        return url

    yield factory

    _dispose_engines_on(created)
    failures = []
    for url in reversed(created):
        try:
            drop_database(url)
        except Exception as exc:
            failures.append(f"{redact(url)}: {exc}")
    if failures:
        pytest.fail("could not drop test database(s): " + "; ".join(failures), pytrace=False)


@pytest.fixture
def db_url(new_db: NewDb) -> str:
    """A fresh database of the current dialect (SQLite when the test has no ``dialect``)."""
    return new_db()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A connected engine on ``db_url`` (``bundler.db.connect``), disposed at teardown."""
    from bundler.db import connect

    eng = connect(db_url)
    yield eng
    eng.dispose()
