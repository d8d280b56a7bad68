"""Issue 15: usage that reaches the source after its customer migrated is carried exactly once,
its charges move the target's balances, and every customer has its own window.

- late xDRs (one with an old timestamp) carried by repeated passes, and by passes killed
  with SIGKILL after the export and in the middle of the load: each exactly once, the
  target's balances equal to the source's plus the late charges (customer: added; debit
  account: taken from its funds); cleaning a late bundle takes its charges back, cleaning the
  customer leaves the target as before its loads;
- a reseller's bundle: every customer under it selected by its own billing period in its
  own time zone, each window in the manifest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler.billing.schema import build_metadata
from bundler.clean import plan_clean, run_clean
from bundler.export import ExportOptions, export_root
from bundler.load import load_bundle
from bundler.progress import RecordingProgress
from bundler.recover import KILL_ENV
from bundler.usage.catchup import CatchUpOptions, catch_up
from tests.export import fixture
from tests.export.fixture import NOW
from tests.export.test_export import ids

REPO = Path(__file__).resolve().parents[2]
D = Decimal

# one pass of late usage, in a process of its own (killed at BUNDLER_TEST_KILL_AT)
PASS = r"""
import sys
from datetime import datetime
from pathlib import Path
from bundler.db import connect
from bundler.usage.catchup import CatchUpOptions, catch_up

source, target, bundles = sys.argv[1:4]
catch_up(connect(source), connect(target), CatchUpOptions(Path(bundles), now=datetime(2026, 11, 15, 12)))
"""


def _late(source: sa.Engine, i: int, account: int, when: datetime, amount: str) -> None:
    xdrs = build_metadata("r1").tables["xdrs"]
    with source.begin() as conn:
        conn.execute(
            xdrs.insert(), [fixture._xdr(i, account, when, 1, call_id=f"late-{i}", charged_amount=D(amount))]
        )


def _killed_pass(source_url: str, target_url: str, bundles: Path, point: str) -> None:
    env = {**os.environ, KILL_ENV: point}
    child = subprocess.run(
        [sys.executable, "-c", PASS, source_url, target_url, str(bundles)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, f"not killed at {point}: {child.stderr[-2000:]}"


def _target_state(target: sa.Engine) -> tuple[dict[str, int], Decimal, Decimal, Decimal]:
    with target.connect() as conn:
        late = dict(
            conn.execute(
                sa.text("SELECT call_id, count(*) FROM xdrs WHERE call_id LIKE 'late-%' GROUP BY call_id")
            ).all()
        )
        customer = conn.execute(sa.text("SELECT balance FROM customers WHERE name = 'acme'")).scalar_one()
        debit = conn.execute(sa.text("SELECT balance FROM accounts WHERE id = 'acme-1'")).scalar_one()
        credit = conn.execute(sa.text("SELECT balance FROM accounts WHERE id = 'acme-2'")).scalar_one()
    return {str(k): int(v) for k, v in late.items()}, D(str(customer)), D(str(debit)), D(str(credit))


def test_late_usage_is_carried_exactly_once(dialect: str, new_db: Any, tmp_path: Path) -> None:
    source_url, target_url = new_db(), new_db()
    source = fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    options = ExportOptions(now=NOW)
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path, options=options).path)
    load_bundle(target, export_root(source, "customer", "acme", tmp_path, options=options).path)
    customer0, debit0, credit0 = D("12.34567"), D("3.14159"), D("0.00000")  # as the source exported them
    bundles = tmp_path / "usage"
    pass_options = CatchUpOptions(bundles, now=NOW)

    # late: one with an old timestamp (a closed period), one in the window
    _late(source, 100, 1, datetime(2026, 10, 5, 9, 30), "1.50000")
    _late(source, 101, 2, datetime(2026, 11, 15, 11, 0), "0.25000")
    first = catch_up(source, target, pass_options)
    assert [(r["state"], r["message"]) for r in first.summary()["per_root"]] == [("carried", None)]
    assert first.summary()["rows"] == 2
    assert _target_state(target) == (
        {"late-100": 1, "late-101": 1},
        customer0 + D("1.75"),
        debit0 - D("1.5"),
        credit0,  # a credit account keeps no balance of its own
    )

    # killed in the middle of the load, then right after the next export
    _late(source, 102, 1, datetime(2026, 11, 15, 11, 30), "0.10000")
    _killed_pass(source_url, target_url, bundles, "usage-load")
    assert "late-102" not in _target_state(target)[0]
    _late(source, 103, 2, datetime(2026, 9, 1, 0, 0), "0.02000")
    _killed_pass(source_url, target_url, bundles, "usage-exported")
    assert _target_state(target)[0] == {"late-100": 1, "late-101": 1, "late-102": 1}
    finished = catch_up(source, target, pass_options)  # loads what the killed pass exported
    assert finished.summary()["rows"] == 1
    assert catch_up(source, target, pass_options).summary()["bundles"] == 0  # a re-run carries nothing

    late, customer, debit, credit = _target_state(target)
    assert late == {"late-100": 1, "late-101": 1, "late-102": 1, "late-103": 1}
    assert customer == customer0 + D("1.5") + D("0.25") + D("0.1") + D("0.02")
    assert debit == debit0 - D("1.5") - D("0.1")
    assert credit == credit0
    with target.connect() as conn:
        charged = conn.execute(sa.text("SELECT count(*), sum(usage_rows) FROM bundler_charges")).one()
    assert (
        charged[1] == 4 + 2
    )  # every late row moved its customer's balance, the debit ones also their account's
    with source.connect() as conn:  # passes with nothing new leave no trace in the source
        records = dict(
            conn.execute(sa.text("SELECT status, count(*) FROM bundler_exports GROUP BY status")).all()
        )
    assert set(records) == {"done"}, records

    # clean takes the charges back: the first late bundle (late-100, late-101), then the customer
    with target.connect() as conn:
        xdr = conn.execute(sa.text("SELECT i_xdr FROM xdrs WHERE call_id = 'late-100'")).scalar_one()
        first_late = conn.execute(
            sa.text("SELECT bundle_id FROM bundler_ledger WHERE table_name = 'xdrs' AND target_pk = :pk"),
            {"pk": str(xdr)},
        ).scalar_one()
    run_clean(target, plan_clean(target, bundles=[first_late]))
    late, customer, debit, credit = _target_state(target)
    assert late == {"late-102": 1, "late-103": 1}
    assert (customer, debit, credit) == (customer0 + D("0.12"), debit0 - D("0.1"), credit0)
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT sum(usage_rows) FROM bundler_charges")).scalar_one() == 2 + 1
    run_clean(target, plan_clean(target, entities=[("customer", "acme")]))  # its late bundles with it
    with target.connect() as conn:
        left = [
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("bundler_charges", "customers", "accounts", "xdrs")
        ]
        loads = conn.execute(sa.text("SELECT kind FROM bundler_loads")).scalars().all()
    assert (left, loads) == ([0, 0, 0, 0], ["vendor"])


def test_each_customer_under_a_reseller_has_its_own_window(dialect: str, new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db())
    md = build_metadata("r1")
    customers = md.tables["customers"]
    with source.begin() as conn:
        # the reseller: monthly in Tokyo; its customer: semimonthly in New York
        conn.execute(sa.update(customers).where(customers.c.i_customer == 1).values(time_zone="Asia/Tokyo"))
        conn.execute(
            sa.update(customers)
            .where(customers.c.i_customer == 3)
            .values(i_billing_period=3, time_zone="America/New_York")
        )
    # NOW is 2026-11-15 12:00 UTC: New York's half-month is [11-01 04:00, 11-16 05:00) UTC,
    # Tokyo's month [10-31 15:00, 11-30 15:00) UTC
    _late(source, 20, 4, datetime(2026, 11, 1, 3, 0), "0.1")  # 23:00 on Oct 31 in New York: out
    _late(source, 21, 4, datetime(2026, 11, 16, 4, 30), "0.1")  # 23:30 on Nov 15 in New York: in
    _late(source, 22, 4, datetime(2026, 11, 16, 5, 30), "0.1")  # the next half-month: out
    _late(source, 23, 5, datetime(2026, 10, 31, 16, 0), "0.1")  # Nov 1 in Tokyo: in
    _late(source, 24, 5, datetime(2026, 11, 30, 16, 0), "0.1")  # Dec 1 in Tokyo: out
    result = export_root(
        source, "reseller", "reseller-r", tmp_path, options=ExportOptions(now=NOW, mark=False)
    )
    assert ids(result.path, "xdrs") == {8, 9, 21, 23}
    windows = {w["natural_key"]["name"]: w for w in result.manifest.to_doc()["usage"]["windows"]}
    assert set(windows) == {"reseller-r", "sub-reseller-r2", "retail-under-r2"}
    assert (windows["retail-under-r2"]["billing_period"], windows["retail-under-r2"]["time_zone"]) == (
        "semimonthly",
        "America/New_York",
    )
    assert (windows["retail-under-r2"]["from"], windows["retail-under-r2"]["to"]) == (
        "2026-11-01 04:00:00",
        "2026-11-16 05:00:00",
    )
    assert (windows["reseller-r"]["from"], windows["reseller-r"]["to"]) == (
        "2026-10-31 15:00:00",
        "2026-11-30 15:00:00",
    )
    assert windows["sub-reseller-r2"]["time_zone"] is None  # none named: UTC
    assert windows["sub-reseller-r2"]["from"] == "2026-11-01 00:00:00"


def test_an_empty_window_says_so(new_db: Any, tmp_path: Path) -> None:
    """bravo (daily) has usage on Nov 14 and 15 only: two days later its window is empty."""
    source = fixture.build(new_db("sqlite"))
    progress = RecordingProgress()
    later = datetime(2026, 11, 17, 12)
    result = export_root(
        source, "customer", "bravo", tmp_path, options=ExportOptions(now=later, mark=False), progress=progress
    )
    assert "xdrs" not in result.manifest.tables
    assert "selects no usage" in result.manifest.to_doc()["usage"]["warning"]
    assert any("warning: the usage window" in n for n in progress.notes())


def test_follow_runs_passes_until_stopped() -> None:
    import threading

    from bundler.usage.catchup import CatchUpResult, follow

    stop = threading.Event()
    seen: list[CatchUpResult] = []

    def on_pass(result: CatchUpResult) -> None:
        seen.append(result)
        if len(seen) == 3:
            stop.set()  # what SIGINT or SIGTERM does

    assert follow(0.01, lambda: CatchUpResult(datetime(2026, 11, 15)), stop=stop, on_pass=on_pass) == 3
    assert len(seen) == 3


def test_since_starts_at_midnight_in_each_customers_zone(dialect: str, new_db: Any, tmp_path: Path) -> None:
    """--xdrs since=DATE starts at midnight of DATE in each customer's own zone: an xDR at 23:30
    local on the day before stays out, one at 00:30 local on the day goes; under a reseller
    every customer by its own zone, each window in the manifest."""
    source = fixture.build(new_db(dialect))
    customers = build_metadata("r1").tables["customers"]
    with source.begin() as conn:
        conn.execute(sa.update(customers).where(customers.c.i_customer == 1).values(time_zone="Asia/Tokyo"))
        conn.execute(
            sa.update(customers)
            .where(customers.c.i_customer.in_((3, 4)))
            .values(time_zone="America/New_York")
        )
    # midnight of Nov 1: 04:00 UTC in New York (EDT), 15:00 UTC on Oct 31 in Tokyo
    _late(source, 30, 1, datetime(2026, 11, 1, 3, 30), "0.1")  # acme: 23:30 on Oct 31 in New York: out
    _late(source, 31, 1, datetime(2026, 11, 1, 4, 30), "0.1")  # acme: 00:30 on Nov 1 in New York: in
    _late(source, 32, 4, datetime(2026, 11, 1, 3, 30), "0.1")  # retail-under-r2, New York: out
    _late(source, 33, 4, datetime(2026, 11, 1, 4, 0), "0.1")  # its midnight exactly: in
    _late(source, 34, 5, datetime(2026, 10, 31, 14, 30), "0.1")  # reseller, 23:30 on Oct 31 in Tokyo: out
    _late(source, 35, 5, datetime(2026, 10, 31, 15, 30), "0.1")  # 00:30 on Nov 1 in Tokyo: in
    since = ExportOptions(now=NOW, mark=False, xdrs="since=2026-11-01")
    acme = export_root(source, "customer", "acme", tmp_path, options=since)
    assert ids(acme.path, "xdrs") == {1, 2, 3, 31}
    assert (acme.manifest.to_doc()["usage"]["from"], acme.manifest.to_doc()["usage"]["to"]) == (
        "2026-11-01 04:00:00",
        None,
    )
    reseller = export_root(source, "reseller", "reseller-r", tmp_path, options=since)
    assert ids(reseller.path, "xdrs") == {8, 9, 33, 35}
    windows = {w["natural_key"]["name"]: w for w in reseller.manifest.to_doc()["usage"]["windows"]}
    assert {name: (w["time_zone"], w["from"], w["to"]) for name, w in windows.items()} == {
        "reseller-r": ("Asia/Tokyo", "2026-10-31 15:00:00", None),
        "sub-reseller-r2": (None, "2026-11-01 00:00:00", None),
        "retail-under-r2": ("America/New_York", "2026-11-01 04:00:00", None),
    }


def test_a_row_committed_after_the_snapshot_below_the_high_water(
    dialect: str, new_db: Any, tmp_path: Path
) -> None:
    """A late row whose key was taken before the customer's export but whose transaction
    committed after it (its key below the export's high-water, its time in a closed period)
    is carried by the next pass, once; the older usage the export left in the source stays."""
    source_url, target_url = new_db(dialect), new_db(dialect)
    source = fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    options = ExportOptions(now=NOW)
    _late(source, 50, 3, datetime(2026, 11, 15, 9, 0), "0.3")  # bravo's: the high-water is 50
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path, options=options).path)
    load_bundle(target, export_root(source, "customer", "acme", tmp_path, options=options).path)
    _late(source, 40, 1, datetime(2026, 10, 10, 9, 0), "0.4")  # acme's, committed after the export
    pass_options = CatchUpOptions(tmp_path / "usage", now=NOW)
    first = catch_up(source, target, pass_options)
    assert first.summary()["rows"] == 1
    with target.connect() as conn:
        calls = set(conn.execute(sa.text("SELECT call_id FROM xdrs")).scalars())
    # acme's current period (1-3) and the late row; its October usage (4, 5) stays in the source
    assert calls == {"call-1", "call-2", "call-3", "late-40"}
    assert _target_state(target)[1:] == (D("12.34567") + D("0.4"), D("3.14159") - D("0.4"), D("0.00000"))
    assert catch_up(source, target, pass_options).summary()["bundles"] == 0


def test_a_clean_that_keeps_a_row_of_a_late_bundle_takes_its_charges_back(
    dialect: str, new_db: Any, tmp_path: Path
) -> None:
    """A late bundle whose clean keeps a row another load uses (the destination it brought,
    which bravo's load reused): its usage is gone, so are its charges."""
    source = fixture.build(new_db(dialect))
    target = fixture.build_target(new_db(dialect), "r2")
    options = ExportOptions(now=NOW)
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path, options=options).path)
    load_bundle(target, export_root(source, "customer", "acme", tmp_path, options=options).path)
    before = _target_state(target)
    xdrs = build_metadata("r1").tables["xdrs"]
    with (
        source.begin() as conn
    ):  # to destination 5, which only bravo's usage reaches: the late bundle brings it
        conn.execute(xdrs.insert(), [fixture._xdr(60, 1, datetime(2026, 11, 15, 11), 5, call_id="late-60")])
    late = catch_up(source, target, CatchUpOptions(tmp_path / "usage", now=NOW))
    [bundle_id] = late.summary()["per_root"][0]["bundles"]
    load_bundle(target, export_root(source, "customer", "bravo", tmp_path, options=options).path)
    charged = _target_state(target)
    assert charged[1] == before[1] + D("0.01234")
    plan = plan_clean(target, bundles=[bundle_id])
    assert plan.partly and not plan.closes  # the destination stays: bravo's xDRs use it
    run_clean(target, plan)
    assert _target_state(target) == before
