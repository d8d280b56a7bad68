"""Property: any customer exported from r1 and loaded into r2 comes back exactly.

Hypothesis makes customers (names of arbitrary Unicode, non-BMP included; a few accounts;
xDRs with exact decimals at the limits of NUMERIC(16, 5), timestamps with microseconds,
text with quotes, commas, newlines, tabs, backslashes, and NULL versus ''), writes each
into an r1 source made by ``tests.export.fixture.build`` under ids and names of its own,
exports it, loads it into an r2 target (``fixture.build_target``), exports it again from
the target and compares the two bundles value by value (``tests.load.compare``). The
first bundle is also checked against the generated rows, so a value the source or the
export altered cannot hide behind a round trip that alters it twice the same way.

The source and the target are made once per test; every example adds one more customer
to both, as a lineup does.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.billing.schema import build_metadata
from bundler.bundle import open_bundle
from bundler.export import ExportOptions, export_root
from bundler.graph import graph_for_release
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW
from tests.load.compare import differences

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

MAX_MONEY = Decimal("99999999999.99999")  # NUMERIC(16, 5)
R1 = build_metadata("r1")
R2_GRAPH = graph_for_release("r2")

# -- strategies --------------------------------------------------------------------------------

# Unicode without surrogates (not encodable) and NUL (no database stores it in text).
_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00")
_NASTY = st.sampled_from(
    ['"', "'", ",", "\n", "\r", "\t", "\\", " ", ";", "😀", "𝄞", "\U0010fffd", "\u2028", "\ufeff", "ß", "日"]
)
_ALPHABET = st.one_of(_CHARS, _NASTY)
# Whole values that bulk paths could mistake for something else (NULL markers, end of data).
_TRICKY = ["", " ", "NULL", "null", "\\N", "\\.", "\\", '""', "a,b", '"q"', "x\ny", "\r\n", "\t", "'"]


def text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(_ALPHABET, min_size=min_size, max_size=max_size)


def nullable_text(max_size: int) -> st.SearchStrategy[str | None]:
    tricky = [t for t in _TRICKY if len(t) <= max_size]
    return st.one_of(st.none(), st.sampled_from(tricky), text(max_size))


MONEY = st.one_of(
    st.sampled_from(
        [Decimal("0"), Decimal("-0.00000"), MAX_MONEY, -MAX_MONEY, Decimal("0.00001"), Decimal("-0.00001")]
    ),
    st.decimals(min_value=-MAX_MONEY, max_value=MAX_MONEY, places=5, allow_nan=False, allow_infinity=False),
)
NULLABLE_MONEY = st.one_of(st.none(), MONEY)
WHEN = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31, 23, 59, 59, 999_999))
DAY = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31))
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)

XDR = st.fixed_dictionaries(
    {
        "i_service": st.sampled_from([1, 2]),
        "i_dest": st.sampled_from([None, 1, 2, 3, 4, 5]),
        "call_id": text(40),
        "cli": nullable_text(32),
        "cld": nullable_text(32),
        "connect_time": WHEN,
        "disconnect_time": WHEN,
        "bill_time": WHEN,
        "charged_amount": MONEY,
        "charged_quantity": INT32,
        "used_quantity": INT32,
        "account_balance": MONEY,
        "country": nullable_text(64),
        "description": nullable_text(128),
    }
)


@st.composite
def accounts(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "id": draw(text(40)),
        "i_product": draw(st.sampled_from([1, 2])),
        "billing_model": draw(st.sampled_from([-1, 1])),
        "balance": draw(MONEY),
        "credit_limit": draw(NULLABLE_MONEY),
        "opening_balance": draw(MONEY),
        "activation_date": draw(DAY),
        "expiration_date": draw(st.one_of(st.none(), DAY)),
        "h323_password": draw(nullable_text(64)),
        "blocked": draw(st.sampled_from(["N", "Y"])),
        "xdrs": draw(st.lists(XDR, max_size=6)),
    }


def customers(name_size: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "name": text(name_size),
            "balance": MONEY,
            "credit_limit": NULLABLE_MONEY,
            "creation_date": WHEN,
            "companyname": nullable_text(128),
            "fax": nullable_text(32),
            "firstname": nullable_text(64),
            "lastname": nullable_text(64),
            "email": nullable_text(128),
            "phone": nullable_text(32),
            "address": nullable_text(255),
            "notes": nullable_text(300),
            "accounts": st.lists(accounts(), min_size=1, max_size=3),
        }
    )


# -- writing a generated customer into the source ---------------------------------------------


def rows_of(customer: dict[str, Any], n: int) -> dict[str, list[dict[str, Any]]]:
    """The generated customer as r1 rows, with ids and unique names of example ``n``."""
    i_customer = 1_000 + n
    out: dict[str, list[dict[str, Any]]] = {"customers": [], "accounts": [], "xdrs": []}
    fields = {k: v for k, v in customer.items() if k != "accounts"}
    fields["name"] = f"h{n} {customer['name']}"
    out["customers"].append(
        {
            **fields,
            "i_customer": i_customer,
            "i_customer_type": 1,
            "i_parent": None,
            "iso_4217": "USD",
            "i_customer_class": None,
            "i_acl": None,
            "i_taxation_method": 1,
            "i_dialing_rule": None,
            "i_ftp": None,
            "i_custom_report": None,
            "i_default_site": None,
            "i_billing_period": 4,
            "bill_status": "O",
        }
    )
    for k, account in enumerate(customer["accounts"]):
        i_account = 10_000 + 10 * n + k
        fields = {key: v for key, v in account.items() if key != "xdrs"}
        fields["id"] = f"a{n}.{k}:{account['id']}"
        out["accounts"].append(
            {
                **fields,
                "i_account": i_account,
                "i_customer": i_customer,
                "iso_4217": "USD",
                "bill_status": "O",
                "i_routing_plan": None,
                "i_service_policy": None,
                "i_access_policy": None,
                "i_vd_plan": None,
                "i_spending_plan": None,
            }
        )
        for j, xdr in enumerate(account["xdrs"]):
            out["xdrs"].append(
                {
                    **xdr,
                    "i_xdr": 1_000_000 + 100 * n + 10 * k + j,
                    "i_account": i_account,
                    "i_invoice": None,
                    "call_id": f"c{n}.{k}.{j}:{xdr['call_id']}",
                }
            )
    return out


def insert(source: sa.Engine, rows: dict[str, list[dict[str, Any]]]) -> None:
    with source.begin() as conn:
        for table in ("customers", "accounts", "xdrs"):
            if rows[table]:
                conn.execute(R1.tables[table].insert(), rows[table])


def same(got: Any, made: Any) -> bool:
    """Equal values of equal types; decimals by value (the bundle has the column's scale)."""
    if isinstance(made, Decimal):
        return isinstance(got, Decimal) and got == made and got.as_tuple().exponent == -5
    return type(got) is type(made) and got == made


def assert_bundle_holds(path: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    """The exported bundle has exactly the generated values (ids aside)."""
    bundle = open_bundle(path)
    keys = {"customers": "name", "accounts": "id", "xdrs": "call_id"}
    for table, key in keys.items():
        got: dict[Any, dict[str, Any]] = {}
        if table in bundle.tables():
            for batch in bundle.iter_batches(table, 1024):
                for row in batch.to_pylist():
                    got[row[key]] = row
        wanted = {row[key]: row for row in rows[table]}
        assert sorted(got) == sorted(wanted), f"{table}: the bundle has other rows than the source"
        for k, row in wanted.items():
            for col, value in row.items():
                if col.startswith("i_") or col == "bill_status":
                    continue  # ids are the source's; statuses are marked by the export
                assert same(got[k][col], value), (
                    f"{table} {k!r}.{col}: {got[k][col]!r} in the bundle, {value!r} made"
                )


def round_trip_check(
    source: sa.Engine, target: sa.Engine, tmp_path: Path, max_examples: int, name_size: int
) -> None:
    counter = itertools.count(1)

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(customer=customers(name_size))
    def check(customer: dict[str, Any]) -> None:
        n = next(counter)
        rows = rows_of(customer, n)
        insert(source, rows)
        i_customer = rows["customers"][0]["i_customer"]
        options = ExportOptions(now=NOW, xdrs="all")
        first = export_root(source, "customer", i_customer, tmp_path / f"a{n}", options=options)
        assert_bundle_holds(first.path, rows)
        result = load_bundle(target, first.path)
        assert result.outcome == "loaded"
        again = export_root(
            target,
            "customer",
            result.root_target_pk,
            tmp_path / f"b{n}",
            options=ExportOptions(now=NOW, xdrs="all", mark=False),
        )
        assert again.manifest.root is not None
        assert again.manifest.root.natural_key == {"name": rows["customers"][0]["name"]}
        assert differences(first.path, target, again.path, R2_GRAPH) == []
        tables = again.manifest.tables
        assert (tables["xdrs"].rows if "xdrs" in tables else 0) == len(rows["xdrs"])
        assert tables["accounts"].rows == len(rows["accounts"])

    check()


# SQLite gets the long run; the servers a short one each.
RUNS = [
    pytest.param("sqlite", 25, 50, id="sqlite"),
    pytest.param("postgresql", 5, 50, id="postgresql"),
    pytest.param("mysql", 5, 50, id="mariadb"),
]


@pytest.mark.parametrize(("dialect", "max_examples", "name_size"), RUNS, indirect=["dialect"])
def test_generated_customers_round_trip_exactly(
    dialect: str, new_db: Any, tmp_path: Path, max_examples: int, name_size: int
) -> None:
    source = fixture.build(new_db())
    target = fixture.build_target(new_db(), "r2")
    round_trip_check(source, target, tmp_path, max_examples, name_size)


@pytest.mark.parametrize(
    "dialect",
    [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql"),
        pytest.param("mysql", id="mariadb"),
    ],
    indirect=True,
)
def test_a_long_customer_name_fits_the_tracking_tables(dialect: str, new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db())
    name = "Zbigniew Brzęczyszczykiewicz Telecommunications Ltd"  # 51 characters, a 49-character slug
    customers = R1.tables["customers"]
    with source.begin() as conn:
        conn.execute(sa.update(customers).where(customers.c.i_customer == 5).values(name=name))
    first = export_root(source, "customer", 5, tmp_path / "a", options=ExportOptions(now=NOW, xdrs="all"))
    target = fixture.build_target(new_db(), "r2")
    result = load_bundle(target, first.path)
    again = export_root(
        target,
        "customer",
        result.root_target_pk,
        tmp_path / "b",
        options=ExportOptions(now=NOW, xdrs="all", mark=False),
    )
    assert again.manifest.root is not None
    assert again.manifest.root.natural_key == {"name": name}
    assert differences(first.path, target, again.path, R2_GRAPH) == []
