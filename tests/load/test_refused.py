"""Issue 20: a value the target refuses ends the load with one line naming the bundle, the
table, the column and the row (by its key in the source), and the target is left as it was.

The source is SQLite, which stores anything: an xDR whose ``cli`` is longer than the
column's 32 characters, one whose ``description`` holds a NUL character, one whose
``charged_quantity`` does not fit a target column narrowed to SMALLINT. PostgreSQL refuses
all three (COPY), MariaDB the long text and the big number (LOAD DATA, and the multi-row
INSERT path when ``LOAD DATA LOCAL`` is off) and stores NUL; SQLite takes every one, and
there the value must come back exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bundler.bulk import ValueRefused
from bundler.errors import ExitCode
from bundler.export import ExportOptions, export_root
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW
from tests.load.test_faults import snapshot

OPTIONS = ExportOptions(now=NOW, xdrs="all")
LONG_CLI = "4420" + "7" * 36  # 40 characters: the column holds 32
NUL_TEXT = "before\x00after"
BIG_QUANTITY = 70_000  # more than a SMALLINT holds


CHANGES: dict[str, dict[int, dict[str, Any]]] = {
    "long": {4: {"cli": LONG_CLI}},
    "nul": {2: {"description": NUL_TEXT}},
    "big": {5: {"charged_quantity": BIG_QUANTITY}},
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path, str]]:
    """The vendor and customer bundles of a SQLite source with the xDRs changed as CHANGES[kind] says
    (made once per kind for every dialect)."""
    made: dict[str, tuple[Path, Path, str]] = {}

    def make(kind: str) -> tuple[Path, Path, str]:
        if kind not in made:
            folder = tmp_path_factory.mktemp(kind)
            source = fixture.build(f"sqlite:///{folder / 'source.db'}")
            try:
                with source.begin() as conn:
                    for i_xdr, values in CHANGES[kind].items():
                        sets = ", ".join(f"{c} = :{c}" for c in values)
                        conn.execute(
                            sa.text(f"UPDATE xdrs SET {sets} WHERE i_xdr = :i"), {"i": i_xdr, **values}
                        )
                vendor = export_root(source, "vendor", "Carrier Ä", folder / "out", options=OPTIONS)
                acme = export_root(source, "customer", "acme", folder / "out", options=OPTIONS)
            finally:
                source.dispose()
            made[kind] = (vendor.path, acme.path, acme.manifest.bundle_id)
        return made[kind]

    return make


def _target(new_db: Any, dialect: str, vendor: Path, *, local_infile: bool = True) -> tuple[str, sa.Engine]:
    url = new_db(dialect)
    fixture.build_target(url, "r2").dispose()
    if dialect == "mysql" and not local_infile:  # the multi-row INSERT path
        engine = sa.create_engine(sa.engine.make_url(url).set(drivername="mysql+pymysql"))
    else:
        from bundler.db import connect

        engine = connect(url)
    load_bundle(engine, vendor)
    return url, engine


def _refused(engine: sa.Engine, url: str, bundle: Path, *, batch_rows: int = 65_536) -> ValueRefused:
    engine.dispose()
    before = snapshot(url)
    with pytest.raises(ValueRefused) as caught:
        load_bundle(engine, bundle, batch_rows=batch_rows)
    engine.dispose()
    assert snapshot(url) == before, "the refused load left traces in the target"
    assert caught.value.exit_code == ExitCode.FAILED
    return caught.value


def _xdr(engine: sa.Engine, call_id: str, column: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT {column} FROM xdrs WHERE call_id = :c"), {"c": call_id}
        ).scalar_one()


@pytest.mark.parametrize("local_infile", [True, False], ids=["bulk", "insert"])
def test_a_text_too_long_for_its_column(dialect: str, new_db: Any, bundles: Any, local_infile: bool) -> None:
    if not local_infile and dialect != "mysql":
        pytest.skip("only MariaDB has a second bulk path")
    vendor, acme, bundle_id = bundles("long")
    url, target = _target(new_db, dialect, vendor, local_infile=local_infile)
    if dialect == "sqlite":  # SQLite stores it: it comes back exactly
        assert load_bundle(target, acme).outcome == "loaded"
        assert _xdr(target, "call-4", "cli") == LONG_CLI
        return
    error = _refused(target, url, acme)
    line = error.line()
    assert line.startswith(
        f"bundle {bundle_id}: table xdrs, row i_xdr=4 (source key): column cli = '{LONG_CLI}'"
    )
    assert error.column == "cli" and error.value == LONG_CLI
    assert "widen the target's column" in line and "\n" not in line


def test_a_nul_character_in_text(dialect: str, new_db: Any, bundles: Any) -> None:
    vendor, acme, bundle_id = bundles("nul")
    url, target = _target(new_db, dialect, vendor)
    if dialect != "postgresql":  # SQLite and MariaDB store NUL: it comes back exactly
        assert load_bundle(target, acme).outcome == "loaded"
        assert _xdr(target, "call-2", "description") == NUL_TEXT
        return
    error = _refused(target, url, acme)
    assert error.line().startswith(
        f"bundle {bundle_id}: table xdrs, row i_xdr=2 (source key): column description = 'before\\x00after'"
    )
    assert "cannot store a NUL character" in error.line()


@pytest.mark.parametrize("batch_rows", [65_536, 2], ids=["one-batch", "batches-of-2"])
def test_a_number_out_of_the_target_columns_range(
    dialect: str, new_db: Any, bundles: Any, batch_rows: int
) -> None:
    """Also when the xDRs come in batches of two (the row is in the third; on PostgreSQL all
    go in one COPY, whose row number counts across the batches)."""
    vendor, acme, bundle_id = bundles("big")
    url, target = _target(new_db, dialect, vendor)
    if dialect == "sqlite":  # no narrower integer column in SQLite: the value comes back exactly
        assert load_bundle(target, acme).outcome == "loaded"
        assert _xdr(target, "call-5", "charged_quantity") == BIG_QUANTITY
        return
    with target.begin() as conn:  # the target's column is narrower than the source's
        if dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE xdrs ALTER COLUMN charged_quantity TYPE smallint")
        else:
            conn.exec_driver_sql("ALTER TABLE xdrs MODIFY charged_quantity SMALLINT NOT NULL")
    error = _refused(target, url, acme, batch_rows=batch_rows)
    assert error.line().startswith(
        f"bundle {bundle_id}: table xdrs, row i_xdr=5 (source key): column charged_quantity = {BIG_QUANTITY}"
    )
