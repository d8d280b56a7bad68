"""What the benchmarks share: settings, database servers, temporary databases, fixtures.

Every benchmark makes its own databases (unique names, :func:`temp_database`) and drops
them when it is done. The one thing benchmarks share is the *customer bundle*: the export
benchmark leaves the bundle of a customer with ``xdrs`` xDRs (and the vendor bundles of
the same source) in the run's work folder, and ``inspect`` and ``load`` use it; run
without ``export`` they make it themselves (seeded and exported, untimed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DECISIONS = ROOT / "examples" / "decisions.json"

#: Where each server dialect is found: (environment variable, local default).
SERVERS = {
    "postgresql": ("BUNDLER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "mysql": ("BUNDLER_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
}
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}

#: The shape of the one big customer: all usage on one customer, spread over its accounts.
BIG_CUSTOMER: dict[str, Any] = {
    "customers": 1,
    "resellers": 0,
    "distributors": 0,
    "accounts_per_customer": 20,
    "vendor_xdrs": 2_000,
}


@dataclass
class Settings:
    """What ``python -m bench`` was asked to do (see ``python -m bench --help``)."""

    xdrs: int = 1_000_000
    quick: bool = False
    #: customers seeded for the lineup throughput runs
    lineup_customers: int = 1_000
    #: seconds each throughput run may take before it is stopped (0: no limit)
    lineup_budget: float = 100.0
    #: customers of the "typical" size migrated for the downtime measurement (enough that the
    #: p95 is not simply the slowest: with 4 done, as with 6 seeded, it was the max)
    typical_customers: int = 24
    typical_accounts: int = 30
    typical_xdrs_per_account: int = 100
    inspect_runs: int = 3
    export_runs: int = 2
    #: load benchmark: pairs of a bundler load and PostgreSQL's COPY of the same xDRs
    load_pairs: int = 3
    duckdb: bool = True
    #: clean benchmark: seconds a reverse export or a clean may take before it is stopped (0: no limit)
    clean_budget: float = 600.0
    #: clean benchmark: no refresh of the planner statistics (to measure what it is for)
    stale_statistics: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bundler-bench-")))

    @property
    def small_xdrs(self) -> int:
        """The smaller customer of the memory comparison: a tenth of the big one."""
        return max(self.xdrs // 10, 1_000)


# -- the machine ---------------------------------------------------------------------------


def cpu_ticks() -> tuple[int, int] | None:
    """(all CPU ticks, ticks stolen by the hypervisor) since boot, from /proc/stat (None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks), ticks[7]


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time the hypervisor took between two :func:`cpu_ticks` (a virtual
    machine whose host is busy runs everything slower, by as much as 2x measured here)."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return round(100 * (after[1] - before[1]) / (after[0] - before[0]), 1)


def steal_note(pct: float | None) -> str:
    """A note for a line of numbers measured while the hypervisor took a notable share."""
    return f" [CPU steal {pct:g}%: slower than this machine is]" if pct is not None and pct >= 5 else ""


# -- servers and databases -------------------------------------------------------------------

_reachable: dict[str, tuple[str | None, str]] = {}


def server(dialect: str) -> tuple[str | None, str]:
    """(where to create databases of ``dialect``, why not) — the first is None when unusable."""
    if dialect == "sqlite":
        return "sqlite", ""
    if dialect in _reachable:
        return _reachable[dialect]
    from bundler.db import connect

    env, default = SERVERS[dialect]
    url = os.environ.get(env, "").strip() or default
    if url.lower() == "none":
        found: tuple[str | None, str] = (None, f"{env}=none")
    else:
        try:
            connect(url, connect_timeout=3).dispose()
            found = (url, "")
        except Exception as exc:
            found = (None, f"not reachable at {url} ({str(exc).splitlines()[0][:120]}; set {env})")
    _reachable[dialect] = found
    return found


def available(dialects: tuple[str, ...]) -> list[str]:
    """The dialects whose server answers; prints a line for each that does not."""
    usable = []
    for dialect in dialects:
        url, why = server(dialect)
        if url is None:
            print(f"  {LABELS[dialect]}: skipped, {why}")
        else:
            usable.append(dialect)
    return usable


@contextlib.contextmanager
def temp_database(dialect: str, purpose: str) -> Iterator[str]:
    """A new, empty, uniquely named database of ``dialect``; dropped afterwards."""
    from bundler.db import create_database, drop_database

    where, why = server(dialect)
    if where is None:
        raise RuntimeError(f"{LABELS[dialect]} {why}")
    folder = None
    if dialect == "sqlite":
        folder = tempfile.mkdtemp(prefix="bundler-bench-db-")
        where = folder
    url = create_database(where, f"bench_{purpose}_{uuid.uuid4().hex[:8]}")
    try:
        yield url
    finally:
        drop_database(url)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def register(engine: Any, release: str) -> None:
    from bundler import tracking
    from bundler.db import begin_write

    with begin_write(engine) as conn:
        tracking.register_system(conn, release)


def seed_big_customer(engine: Any, xdrs: int) -> dict[str, int]:
    """Seed a source (release r1) whose one retail customer holds ``xdrs`` xDRs; register it."""
    from bundler.billing.seed import seed_source

    counts = seed_source(engine, release="r1", xdrs=xdrs, **BIG_CUSTOMER)
    register(engine, "r1")
    analyze(engine)
    return counts


def analyze(engine: Any) -> None:
    """PostgreSQL: vacuum and gather planner statistics, as autovacuum keeps a live source.

    Right after a bulk seed the planner knows nothing of the tables and may choose another
    plan for the export's queries (a bitmap scan and a sort instead of the primary key's
    order): a 1M-xDR export took 11 s that way and 4.5-5 s after ``ANALYZE``. VACUUM sets
    the rows' hint bits, which the first reader of freshly written rows would otherwise
    write (and autovacuum would run beside the first export).
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def prepare_target(engine: Any) -> dict[str, int]:
    """An r2 target with its prerequisites and part of the configuration (no customers)."""
    from bundler.billing.seed import init_db, seed_target

    init_db(engine, "r2")
    counts = seed_target(engine, release="r2")
    register(engine, "r2")
    return counts


def open_customers(engine: Any) -> list[int]:
    """Top-level retail customers that are open (the ones an export accepts)."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT i_customer FROM customers WHERE i_customer_type IN (1, 3) "
                    "AND i_parent IS NULL AND bill_status = 'O' ORDER BY i_customer"
                )
            ).scalars()
        )


def counterpart_ids(engine: Any) -> list[int]:
    """The customers that vendors also are (bilateral traffic exchange): a target must have
    them before their vendors are loaded."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT DISTINCT i_customer FROM vendors WHERE i_customer IS NOT NULL ORDER BY i_customer"
                )
            ).scalars()
        )


def big_customer(engine: Any) -> int:
    """The one open customer of a :func:`seed_big_customer` source that is no vendor's counterpart."""
    counterparts = set(counterpart_ids(engine))
    (customer,) = [i for i in open_customers(engine) if i not in counterparts]
    return customer


def vendor_ids(engine: Any) -> list[int]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT i_vendor FROM vendors ORDER BY i_vendor")).scalars())


# -- the shared customer bundle -------------------------------------------------------------


@dataclass
class Fixture:
    """The big customer's bundle and the vendor bundles of the same source, with the
    bundles of the vendors' customer counterparts (loaded before the vendors)."""

    customer: Path
    #: the counterparts' bundles, then the vendors' (:meth:`Context.export_vendors`)
    vendors: list[Path]
    source_dialect: str
    xdrs: int

    def load_vendors(self, engine: Any) -> None:
        """Load the vendors into a target (:func:`prepare_target`), their customer
        counterparts first, as an operator does (a vendor refers to its counterpart)."""
        from bundler.load import load_bundle

        for bundle in self.vendors:
            load_bundle(engine, bundle, decisions=DECISIONS)


class Context:
    """State of one ``python -m bench`` run shared between benchmarks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fixture: Fixture | None = None

    def export_vendors(self, engine: Any, dialect: str) -> list[Path]:
        """The bundles to load before the big customer, in order: the vendors' customer
        counterparts, then the vendors."""
        from bundler.export import ExportOptions, export_root

        out = self.settings.workdir / "fixture"
        roots = [("customer", i) for i in counterpart_ids(engine)] + [
            ("vendor", v) for v in vendor_ids(engine)
        ]
        return [
            export_root(engine, kind, key, out, options=ExportOptions(mark=False)).path for kind, key in roots
        ]

    def customer_fixture(self) -> Fixture:
        """The big customer's bundle: the export benchmark's, or made now (untimed)."""
        if self.fixture is not None:
            return self.fixture
        from bundler.db import connect
        from bundler.export import ExportOptions, export_root

        xdrs = self.settings.xdrs
        print(f"  (making the customer bundle: seeding {xdrs:,} xDRs into SQLite and exporting them)")
        started = time.perf_counter()
        with temp_database("sqlite", "fixture") as url:
            engine = connect(url)
            try:
                seed_big_customer(engine, xdrs)
                vendors = self.export_vendors(engine, "sqlite")
                customer = big_customer(engine)
                bundle = export_root(
                    engine,
                    "customer",
                    customer,
                    self.settings.workdir / "fixture",
                    options=ExportOptions(xdrs="all", mark=False),
                )
            finally:
                engine.dispose()
        print(f"  (bundle made in {time.perf_counter() - started:.0f} s)")
        self.fixture = Fixture(bundle.path, vendors, "sqlite", xdrs)
        return self.fixture


# -- subprocesses -----------------------------------------------------------------------------


def run_json(argv: list[str], *, timeout: float = 3600, cwd: Path = ROOT) -> dict[str, Any]:
    """Run a helper that prints one JSON object as its last stdout line; return it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        raise RuntimeError(
            f"{Path(argv[1]).name if len(argv) > 1 else argv[0]} failed:\n  " + "\n  ".join(tail)
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# -- numbers ---------------------------------------------------------------------------------


def per_s(n: float, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def k(n: float) -> str:
    """A rate as thousands: 123,456 → '123.5k'."""
    return f"{n / 1000:,.1f}k"


def mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


def ratio_line(ours: float, theirs: float, goal: float) -> tuple[float, str]:
    """(ratio, verdict text) of our time against a baseline's time, for a goal of ``goal``x."""
    ratio = round(ours / theirs, 3) if theirs > 0 else float("inf")
    verdict = "meets" if ratio <= goal else "MISSES"  # the closing table judges the same number
    return ratio, f"{ratio:.2f}x (goal ≤ {goal:g}x: {verdict})"
