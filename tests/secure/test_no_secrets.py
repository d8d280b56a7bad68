"""Issue 19: the values of sensitive columns appear in no output without --show-sensitive.

Secrets are seeded in the four columns the graph declares ``sensitive`` (an account's H.323
password, a card's number and holder, a SIM card's PIN); then every path that shows rows or
talks about them runs without ``--show-sensitive``: export, ``inspect`` (summary, verify,
query in each format, diff), load (its plan, dry run, result and progress), migrate (its run
report, HTML and JSON, and its log), a decisions template and the ``--interactive``
questions, and the message of a load refused over a value (its --debug traceback too). Not
one seeded secret may appear. With ``--show-sensitive`` they show again, where the command
has the key to read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner, Result

from bundler.cli import main
from bundler.export import export_root
from tests.export import fixture
from tests.load.test_load import OPTIONS, overlapping
from tests.secure.test_masked import _with_new_pin

#: The seeded secrets: (table, key column, key, column, value). The PIN fits the target's column.
SEEDED = (
    ("accounts", "i_account", 1, "h323_password", "h323-Qx7Zr9wv"),
    ("payment_methods", "i_payment_method", 1, "number", "4111-SECRET-0042"),
    ("payment_methods", "i_payment_method", 1, "name_on_card", "Zyxwa Qvotsky"),
    ("sim_cards", "i_sim_card", 1, "pin", "P846297"),
)
SECRETS = tuple(s[-1] for s in SEEDED)
LONG_PIN = "P8462973X"  # 9 characters: the target's pin column holds 8


def _seeded(url: str, pin: str | None = None) -> sa.Engine:
    """The fixture's source, its sensitive columns holding :data:`SEEDED` (the PIN ``pin``, if given)."""
    source = fixture.build(url)
    with source.begin() as conn:
        for table, key_column, key, column, value in SEEDED:
            value = pin if pin is not None and column == "pin" else value
            conn.execute(
                sa.text(f"UPDATE {table} SET {column} = :v WHERE {key_column} = :k"), {"v": value, "k": key}
            )
    return source


def _leaks(text: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    return [s for s in secrets if s in text]


def _clean(result: Result, args: list[str], code: int = 0) -> str:
    """The command's whole output (stdout and stderr), asserted free of every secret."""
    said = result.stdout + result.stderr
    assert result.exit_code == code, (args, said)
    assert not _leaks(said), (args, _leaks(said), said)
    return said


def _files_clean(folder: Path, secrets: tuple[str, ...] = SECRETS) -> list[Path]:
    """Every report, log and decisions file under ``folder`` (not the bundles' Parquet), each
    free of every secret; the list of them."""
    checked = [
        p for p in folder.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".log", ".jsonl")
    ]
    checked = [p for p in checked if p.name != "manifest.json"]
    for path in checked:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not _leaks(text, secrets), (path, _leaks(text, secrets))
    return checked


def test_no_output_shows_a_secret(new_db: Any, tmp_path: Path) -> None:
    source_url, target_url = new_db("sqlite"), new_db("sqlite")
    _seeded(source_url).dispose()
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        return _clean(runner.invoke(main, list(args)), list(args), code)

    out = tmp_path / "out"
    for verbosity in ("-v", "--json"):
        run("export", "--source", source_url, "--customer", "acme", "--vendor", "Carrier Ä",
            "--xdrs", "all", "--no-mark", "--out", str(out / verbosity), verbosity)  # fmt: skip
    acme = next((out / "-v").glob("customer-acme-*.bundle"))
    vendor = next((out / "-v").glob("vendor-*.bundle"))
    changed = _with_new_pin(acme, tmp_path / "changed")
    every = "SELECT * FROM accounts, payment_methods, sim_cards"
    for args in (
        ["summary", str(acme)],
        ["summary", str(acme), "--json"],
        ["verify", str(acme), "-v"],
        ["verify", str(acme), "--json"],
        ["query", str(acme), every],
        ["query", str(acme), every, "--format", "csv"],
        ["query", str(acme), every, "--format", "json"],
        ["query", str(acme), "SELECT pin || '' AS p, upper(number) AS n FROM sim_cards, payment_methods"],
        ["diff", str(acme), str(changed)],
        ["diff", str(acme), str(changed), "--json"],
    ):
        run("inspect", *args)
    fixture.build_target(target_url, "r2").dispose()
    run("load", "--target", target_url, str(vendor), "-v")
    run("load", "--target", target_url, str(acme), "--plan")
    run("load", "--target", target_url, str(acme), "--dry-run", "--json")
    run("load", "--target", target_url, str(acme), "-v")
    run("load", "--target", target_url, str(acme), "--json")  # already loaded

    migrated_to = new_db("sqlite")
    fixture.build_target(migrated_to, "r2").dispose()
    bundles = tmp_path / "migrate"
    migrate = ("migrate", "--source", source_url, "--target", migrated_to, "--bundles", str(bundles))
    run(*migrate, "--vendor", "Carrier Ä", "--customer", "acme", "--xdrs", "all", "-v")
    run(*migrate, "--all", "--json", code=1)  # "gone" fails: the failures are reported too
    reports = _files_clean(bundles)
    assert {p.suffix for p in reports} >= {".html", ".json", ".log"}, reports

    # with the key to show them, they show (the PIN before and after, in the diff)
    shown = runner.invoke(
        main, ["inspect", "query", str(acme), every, "--format", "json", "--show-sensitive"]
    )
    assert shown.exit_code == 0 and not [s for s in SECRETS if s not in shown.stdout], shown.output
    revealed = runner.invoke(main, ["inspect", "diff", str(acme), str(changed), "--show-sensitive"])
    assert f"'{SECRETS[-1]}' → '9999'" in revealed.stdout, revealed.output


def _site_graph(tmp_path: Path) -> Path:
    """The target release's graph as a site declares it: ``products.description`` sensitive too."""
    from bundler.graph import GRAPHS_DIR

    doc = json.loads((GRAPHS_DIR / "r2.json").read_text())
    doc["tables"]["products"]["sensitive"] = ["description"]
    path = tmp_path / "site-r2.json"
    path.write_text(json.dumps(doc))
    return path


PRODUCT_SECRET = "Tariff-Secret-Qz"


def test_decisions_and_questions_show_no_secret(new_db: Any, tmp_path: Path) -> None:
    """A shared row that matches the target's is a question (the template, the terminal): its
    differing columns are shown, but those the site's graph declares sensitive are masked."""
    source = _seeded(new_db("sqlite"))
    with source.begin() as conn:
        conn.execute(
            sa.text("UPDATE products SET description = :d WHERE i_product = 1"), {"d": PRODUCT_SECRET}
        )
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "out", options=OPTIONS).path
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    target_url = new_db("sqlite")
    fixture.build_target(target_url, "r2", shared=overlapping()).dispose()
    graph = _site_graph(tmp_path)
    secrets = (*SECRETS, PRODUCT_SECRET)
    runner = CliRunner()
    load = ["load", "--target", target_url, "--spec", str(graph)]
    assert runner.invoke(main, [*load, str(vendor)]).exit_code == 0

    sidecar = tmp_path / "answers.json"
    stopped = runner.invoke(main, [*load, str(acme), "--decisions", str(sidecar)])
    said = stopped.stdout + stopped.stderr
    assert stopped.exit_code == 3 and not _leaks(said, secrets), said
    template = sidecar.read_text()
    assert not _leaks(template, secrets) and '"description"' in template, template  # asked, masked
    revealed = runner.invoke(main, [*load, str(acme), "--decisions", str(sidecar), "--show-sensitive"])
    assert revealed.exit_code == 3 and PRODUCT_SECRET in sidecar.read_text(), revealed.output

    asked = runner.invoke(
        main,
        [*load, str(acme), "--interactive", "--decisions", str(tmp_path / "asked.json")],
        input="\r\r\r\r\r\r",
    )
    said = asked.stdout + asked.stderr
    assert asked.exit_code == 0 and "question 1 of" in said, said
    assert not _leaks(said, secrets), (_leaks(said, secrets), said)
    assert not _leaks((tmp_path / "asked.json").read_text(), secrets)


def test_a_refused_value_is_named_without_showing_it(dialect: str, new_db: Any, tmp_path: Path) -> None:
    """A PIN too long for the target's column: the load stops naming the bundle, the table, the
    column and the row, but not the PIN (but with --show-sensitive)."""
    source = _seeded(new_db("sqlite"), pin=LONG_PIN)
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "out", options=OPTIONS).path
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    target_url = new_db(dialect)
    fixture.build_target(target_url, "r2").dispose()
    runner = CliRunner()
    assert runner.invoke(main, ["load", "--target", target_url, str(vendor)]).exit_code == 0
    secrets = (*SECRETS[:-1], LONG_PIN)
    if dialect == "sqlite":  # SQLite stores it: nothing refused, nothing shown
        _clean(runner.invoke(main, ["load", "--target", target_url, str(acme), "-v"]), ["load"])
        return
    for before, after in (([], []), ([], ["--json"]), (["--debug"], [])):  # --debug: the traceback too
        refused = runner.invoke(main, [*before, "load", "--target", target_url, str(acme), *after])
        said = refused.stdout + refused.stderr
        assert refused.exit_code == 1, said
        assert "table sim_cards, row i_sim_card=1 (source key): column pin = '********'" in said, said
        assert not _leaks(said, secrets), (_leaks(said, secrets), said)
    shown = runner.invoke(main, ["load", "--target", target_url, str(acme), "--show-sensitive"])
    assert shown.exit_code == 1 and f"column pin = '{LONG_PIN}'" in shown.stderr, shown.output
    migrate = [
        "migrate",
        "--source",
        source.url.render_as_string(hide_password=False),
        "--target",
        target_url,
    ]
    failed = runner.invoke(main, [*migrate, "--bundles", str(tmp_path / "m"), "--customer", "acme", "--json"])
    report = json.loads(failed.stdout)["report"]
    assert failed.exit_code == 1 and "column pin = '********'" in Path(report["json"]).read_text(), (
        failed.output
    )
    assert not _leaks(failed.stdout + failed.stderr, secrets), failed.output
    assert {p.suffix for p in _files_clean(tmp_path / "m", secrets)} >= {".html", ".json", ".log"}
