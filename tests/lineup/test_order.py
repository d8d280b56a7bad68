"""The order of roots that reference each other: the referenced root first, a cycle as one unit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bundler import tracking
from bundler.errors import PrerequisitesMissing
from bundler.export import export_root
from bundler.lineup import LineupOptions, RootSelector, run_lineup
from bundler.lineup.lineup import select_roots
from bundler.lineup.order import Placement, cross_references, placements
from bundler.lineup.queue import enqueue, lineup_metadata, lineup_table
from bundler.load import load_bundle
from bundler.load.together import load_together
from bundler.progress import RecordingProgress
from tests.export import fixture
from tests.export.fixture import NOW
from tests.load.test_crossroot import OPTIONS, exact

ACME, BRAVO, DISTRI = ("customer", "4"), ("customer", "5"), ("customer", "6")


def test_levels_follow_the_references_and_a_cycle_is_one_unit() -> None:
    roots = [("c", "a"), ("c", "b"), ("c", "c"), ("c", "d"), ("c", "e"), ("v", "x")]
    needs = {
        ("c", "a"): {("c", "b")},
        ("c", "b"): {("c", "c")},
        ("c", "d"): {("c", "e"), ("c", "a")},
        ("c", "e"): {("c", "d"), ("v", "x"), ("c", "unknown")},
    }
    placed = placements(roots, needs, {"v": 0, "c": 1})
    assert placed[("c", "c")] == Placement(0)
    assert placed[("c", "b")] == Placement(1)
    assert placed[("c", "a")] == Placement(2)
    # d and e need each other (a unit, numbered by its first root) and a: one level above a;
    # the vendor x is of an earlier tier and a root outside the selection does not count
    assert placed[("c", "d")] == placed[("c", "e")] == Placement(3, 3)
    assert placed[("v", "x")] == Placement(0)


def _moved(dialect: str, new_db: Any) -> sa.Engine:
    """The fixture's source with acme's account acme-1 moved to bravo: acme's CPE and
    extension keep pointing at it, bravo's xDRs on it at acme's invoice."""
    source = fixture.build(new_db(dialect))
    with source.begin() as conn:
        conn.execute(sa.text("UPDATE accounts SET i_customer = 5 WHERE id = 'acme-1'"))
    return source


@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_cross_references_are_found_through_owned_and_usage_rows(new_db: Any, dialect: str) -> None:
    source = _moved(dialect, new_db)
    from bundler.context import system_graph

    roots = select_roots(source, [RootSelector("customer", ("acme", "bravo", "distri"))])
    with source.connect() as conn:
        graph, _ = system_graph(conn, None)
        assert cross_references(conn, graph, roots, usage=False) == {ACME: {BRAVO}}
        assert cross_references(conn, graph, roots) == {ACME: {BRAVO}, BRAVO: {ACME}}


def test_an_older_lineup_table_gains_level_and_unit(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 't.db'}")
    old = sa.MetaData()
    sa.Table(
        "bundler_lineup",
        old,
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in lineup_table.columns
            if c.name not in ("level", "unit")
        ),
    )
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            old.tables["bundler_lineup"].insert(),
            [
                {
                    "source_system": "s",
                    "kind": "customer",
                    "root_pk": pk,
                    "phase": "full",
                    "position": int(pk),
                    "root_key": pk,
                    "state": state,
                    "attempts": 1,
                }
                for pk, state in (("1", "done"), ("2", "failed"))
            ],
        )
    placed = {
        ("customer", "1"): Placement(0),
        ("customer", "2"): Placement(1),
        ("customer", "3"): Placement(2, 0),
        ("customer", "4"): Placement(2, 0),
    }
    roots = [("customer", n, str(n)) for n in range(1, 5)]
    assert enqueue(engine, "s", roots, "full", placed) == 2
    with engine.connect() as conn:
        rows = conn.execute(sa.select(lineup_table).order_by(lineup_table.c.position)).all()
    assert [(r.root_pk, r.state, r.level, r.unit) for r in rows] == [
        ("1", "done", None, None),  # finished before: left as it was
        ("2", "failed", 1, None),  # to be tried again: in its new place
        ("3", "pending", 2, 3),  # the unit is numbered by the lowest position of its roots
        ("4", "pending", 2, 3),
    ]
    assert set(lineup_metadata.tables) == {"bundler_lineup"}


def _lineup_rows(target: sa.Engine) -> dict[str, Any]:
    with target.connect() as conn:
        return {r.root_pk: r for r in conn.execute(sa.select(lineup_table))}


def _run(source: sa.Engine, target: sa.Engine, tmp: Path, xdrs: str, workers: int) -> tuple[Any, list[str]]:
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp, options=OPTIONS).path)
    progress = RecordingProgress()
    options = LineupOptions(bundles=tmp / "bundles", xdrs=xdrs, now=NOW, layered=False)
    result = run_lineup(
        source,
        target,
        [RootSelector("customer", ("acme", "bravo", "distri"))],
        options,
        workers=workers,
        progress=progress,
    )
    assert [o.state for o in result.outcomes] == ["done"] * 3, result.outcomes
    return result, progress.notes()


def _bundles(result: Any, tmp: Path) -> dict[str, Path]:
    names = {"4": "acme", "5": "bravo", "6": "distri"}
    return {names[o.root_pk]: tmp / "bundles" / f"{o.bundle_id}.bundle" for o in result.outcomes}


@pytest.mark.slow
def test_the_root_an_account_moved_to_goes_first(new_db: Any, dialect: str, tmp_path: Path) -> None:
    """Without usage, only acme's CPE and extension point at bravo's account: bravo goes first,
    named last, and acme's load finds the account: nothing is ever left open."""
    source = _moved(dialect, new_db)
    target = fixture.build_target(new_db(dialect), "r2")
    result, notes = _run(source, target, tmp_path, "none", workers=1)
    rows = _lineup_rows(target)
    assert (rows["5"].level, rows["4"].level, rows["6"].level) == (0, 1, 0)
    assert rows["4"].unit is None and rows["5"].unit is None
    assert rows["5"].finished_at <= rows["4"].claimed_at
    assert not [n for n in notes if "left open" in n], notes
    exact(target, _bundles(result, tmp_path), tmp_path)


@pytest.mark.slow
def test_customers_that_reference_each_other_migrate_as_one_unit(
    new_db: Any, dialect: str, tmp_path: Path
) -> None:
    """With every xDR, bravo's xDRs on the moved account point at acme's invoice: acme and bravo
    form a unit that one worker (of two) migrates back to back, exact on the first run."""
    source = _moved(dialect, new_db)
    target = fixture.build_target(new_db(dialect), "r2")
    result, notes = _run(source, target, tmp_path, "all", workers=2)
    rows = _lineup_rows(target)
    assert rows["4"].unit is not None and rows["4"].unit == rows["5"].unit
    assert rows["4"].worker == rows["5"].worker
    assert "loading customer name='acme', customer name='bravo' in one transaction" in " ".join(notes), notes
    assert rows["6"].unit is None
    exact(target, _bundles(result, tmp_path), tmp_path)


@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)  # the lineup's units run on every database
def test_bundles_loaded_together_commit_together(new_db: Any, dialect: str, tmp_path: Path) -> None:
    """Acme and bravo in one transaction, in either order: exact, nothing left open; when one of
    them cannot load, neither is loaded."""
    source = _moved(dialect, new_db)
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    bravo = export_root(source, "customer", "bravo", tmp_path, options=OPTIONS)
    bare = fixture.build_target(new_db(dialect), "r2")  # no vendor: bravo lacks its prerequisites
    with pytest.raises(PrerequisitesMissing):
        load_together(bare, [acme.path, bravo.path])
    with bare.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tracking.loads_table)).scalar_one() == 0
    for first, second in ((acme, bravo), (bravo, acme)):
        target = fixture.build_target(new_db(dialect), "r2")
        load_bundle(target, vendor.path)
        results = load_together(target, [first.path, second.path])
        assert [r.outcome for r in results] == ["loaded", "loaded"]
        assert [r.outcome for r in load_together(target, [first.path, second.path])] == ["already-loaded"] * 2
        exact(target, {"acme": acme.path, "bravo": bravo.path}, tmp_path / first.bundle_id)


@pytest.mark.parametrize(
    "dialect", ["sqlite"], indirect=True
)  # the report reads one table: SQL of the kind every test runs
def test_migrate_says_what_is_still_open(new_db: Any, dialect: str, tmp_path: Path) -> None:
    """Acme alone: its CPE, SIM card and extension on the account bravo owns now stay open,
    reported per column and root with what to do; migrating bravo closes them."""
    import json

    from click.testing import CliRunner

    from bundler.cli import main

    source_url, target_url = new_db(dialect), new_db(dialect)
    _moved(dialect, lambda _: source_url)
    fixture.build_target(target_url, "r2")
    args = ["migrate", "--source", source_url, "--target", target_url, "--bundles", str(tmp_path)]
    args += ["--xdrs", "none", "--vendor", "Carrier Ä"]
    ran = CliRunner().invoke(main, [*args, "--customer", "acme", "--json"])
    assert ran.exit_code == 0, ran.output
    still = json.loads(ran.stdout)["open_references"]
    assert still["count"] == 3
    assert still["per_column"] == {
        "cpe_inventory.i_account": 1,
        "extensions.i_account": 1,
        "sim_cards.i_account": 1,
    }
    assert [(r["kind"], json.loads(r["root"]), r["count"]) for r in still["per_root"]] == [
        ("customer", {"name": "acme"}, 3)
    ]
    assert {r["ref_table"] for r in still["refs"]} == {"accounts"} and len(still["lines"]) == 3
    assert "migrate (or load) the roots that own the referenced rows" in still["what_to_do"]
    text = CliRunner().invoke(main, [*args, "--customer", "acme"])
    assert "3 reference(s) to rows of roots not in the target yet still open" in text.stdout, text.output
    assert "to do: migrate (or load)" in text.stdout
    done = CliRunner().invoke(main, [*args, "--customer", "bravo", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["open_references"] == {
        "count": 0,
        "per_column": {},
        "per_root": [],
        "refs": [],
        "lines": [],
        "what_to_do": None,
    }


@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_a_unit_that_cannot_load_leaves_both_sides_as_before(
    new_db: Any, dialect: str, tmp_path: Path
) -> None:
    """The target lacks the vendor bravo's xDRs need: the unit's load fails as a whole, acme and
    bravo get their statuses back in the source, and the target records no load of either."""
    source = _moved(dialect, new_db)
    target = fixture.build_target(new_db(dialect), "r2")

    def statuses() -> list[Any]:
        with source.connect() as conn:
            return [
                tuple(r)
                for table in ("customers", "accounts")
                for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1"))
            ]

    before = statuses()
    options = LineupOptions(bundles=tmp_path / "bundles", xdrs="all", now=NOW, layered=False)
    progress = RecordingProgress()
    selected = [RootSelector("customer", ("acme", "bravo"))]
    result = run_lineup(source, target, selected, options, progress=progress)
    assert any("in one transaction" in n for n in progress.notes()), progress.notes()
    assert [o.state for o in result.outcomes] == ["failed", "failed"]
    assert all("bundle kept" in (o.message or "") for o in result.outcomes)
    assert statuses() == before
    with target.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tracking.loads_table)).scalar_one() == 0
