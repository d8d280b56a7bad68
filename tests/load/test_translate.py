"""Translate: upgrade rules as data, checked against the graphs, applied to Arrow batches."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.billing.schema import HUNT_SEQUENCES
from bundler.bundle import Bundle, open_bundle
from bundler.errors import BundlerError, ExitCode, SpecError
from bundler.graph import Graph, graph_for_release, parse_graph
from bundler.load.translate import (
    UPGRADES_DIR,
    MapCodes,
    NoUpgradePath,
    SplitTable,
    Translator,
    UnmappedCode,
    UpgradeStep,
    check_step,
    load_step,
    parse_step,
    translator_for,
    upgrade_path,
)

R1_R2 = UPGRADES_DIR / "r1-r2.json"


# -- helpers: tiny graphs, steps and bundles ---------------------------------------------------


def table_doc(
    columns: list[tuple[str, str, bool]],
    pk: list[str],
    natural_key: list[str],
    references: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "pk": pk,
        "pk_kind": "surrogate",
        "scope": "owned",
        "natural_key": natural_key,
        "columns": [{"name": n, "type": t, "nullable": null} for n, t, null in columns],
        "references": references or [],
    }


def graph(release: str, tables: dict[str, dict[str, Any]]) -> Graph:
    doc = {"graph_version": 1, "system": "test", "release": release, "roots": {}, "tables": tables}
    return parse_graph(
        doc, path=f"<graph {release}>", sha256=f"sha-{release}-{json.dumps(tables, sort_keys=True)}"
    )


def step(rules: list[dict[str, Any]], from_release: str = "a", to_release: str = "b") -> UpgradeStep:
    return parse_step(
        {"from": from_release, "to": to_release, "rules": rules}, path=f"<{from_release}-{to_release}>"
    )


def write_bundle(folder: Path, tables: dict[str, pa.Table], bundle_id: str = "fake-bundle") -> Bundle:
    """A bundle folder with just what the translator reads: Parquet files and the manifest's table list."""
    (folder / "tables").mkdir(parents=True)
    entries = {}
    for name, data in tables.items():
        pq.write_table(data, folder / "tables" / f"{name}.parquet", compression="zstd")
        entries[name] = {"file": f"tables/{name}.parquet", "rows": data.num_rows}
    (folder / "manifest.json").write_text(json.dumps({"bundle_id": bundle_id, "tables": entries}))
    return open_bundle(folder)


def rows(
    translator: Translator, bundle: Bundle, table: str, batch_rows: int = 65_536
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for batch in translator.batches(bundle, table, batch_rows):
        assert batch.schema.equals(translator.to_graph.table(table).arrow_schema())
        out.extend(batch.to_pylist())
    return out


# A small source release "a" and the release "b" every rule kind makes of it.
PEOPLE_A = table_doc(
    [
        ("id", "int32", False),
        ("name", "string", False),
        ("nick", "string", True),
        ("fax", "string", True),
        ("mode", "string", False),
        ("email", "string", True),
        ("phone", "string", True),
    ],
    ["id"],
    ["name"],
)
PETS_A = table_doc(
    [("i_pet", "int32", False), ("owner", "int32", False), ("species", "string", True)],
    ["i_pet"],
    ["owner", "species"],
    [{"column": "owner", "table": "people", "target_column": "id", "nullable": False, "owner": True}],
)
PEOPLE_B = table_doc(
    [
        ("id", "int32", False),
        ("name", "string", False),
        ("nickname", "string", True),
        ("mode", "string", False),
        ("credit", "decimal(16,5)", False),
        ("since", "date32", False),
        ("level", "int64", False),
        ("remark", "string", True),
    ],
    ["id"],
    ["name"],
)
CONTACTS_B = table_doc(
    [
        ("i_contact", "int32", False),
        ("i_person", "int32", False),
        ("email", "string", True),
        ("phone", "string", True),
    ],
    ["i_contact"],
    ["i_person"],
    [{"column": "i_person", "table": "people", "target_column": "id", "nullable": False, "owner": True}],
)
ANIMALS_B = table_doc(
    [("i_pet", "int32", False), ("owner", "int32", False), ("species", "string", True)],
    ["i_pet"],
    ["owner", "species"],
    [{"column": "owner", "table": "people", "target_column": "id", "nullable": False, "owner": True}],
)
RULES_A_B: list[dict[str, Any]] = [
    {"kind": "rename_column", "table": "people", "from": "nick", "to": "nickname"},
    {"kind": "drop_column", "table": "people", "column": "fax"},
    {"kind": "add_column", "table": "people", "column": "credit", "type": "decimal(16,5)", "default": "12.5"},
    {"kind": "add_column", "table": "people", "column": "since", "type": "date32", "default": "2024-02-29"},
    {"kind": "add_column", "table": "people", "column": "level", "type": "int64", "default": 3},
    {"kind": "add_column", "table": "people", "column": "remark", "type": "string", "default": None},
    {
        "kind": "map_codes",
        "table": "people",
        "column": "mode",
        "map": {"Order": "sequential", "Random": "random"},
    },
    {
        "kind": "split_table",
        "table": "people",
        "into": "contacts",
        "columns": ["email", "phone"],
        "key": {"i_contact": "id", "i_person": "id"},
    },
    {"kind": "rename_table", "from": "pets", "to": "animals"},
    {
        "kind": "map_codes",
        "table": "animals",
        "column": "species",
        "map": {"cat": "Felis"},
        "unmapped": "keep",
    },
]


@pytest.fixture
def ab() -> tuple[Graph, Graph]:
    return (
        graph("a", {"people": PEOPLE_A, "pets": PETS_A}),
        graph("b", {"people": PEOPLE_B, "contacts": CONTACTS_B, "animals": ANIMALS_B}),
    )


def people_a(**columns: list[Any]) -> pa.Table:
    base: dict[str, list[Any]] = {
        "id": [1, 2, 3],
        "name": ["ann", "bob", "cy"],
        "nick": ["a", None, "c"],
        "fax": ["f1", None, None],
        "mode": ["Order", "Random", "Order"],
        "email": ["ann@x", None, None],
        "phone": [None, "+1", None],
    }
    base.update(columns)
    spec = graph("a", {"people": PEOPLE_A, "pets": PETS_A}).table("people")
    return pa.table(base, schema=spec.arrow_schema())


def pets_a() -> pa.Table:
    spec = graph("a", {"people": PEOPLE_A, "pets": PETS_A}).table("pets")
    return pa.table(
        {"i_pet": [7, 8, 9], "owner": [1, 1, 2], "species": ["cat", "dog", None]}, schema=spec.arrow_schema()
    )


# -- r1 -> r2 is complete ----------------------------------------------------------------------


def test_r1_to_r2_covers_every_difference_between_the_graphs() -> None:
    r1, r2 = graph_for_release("r1"), graph_for_release("r2")
    (only,) = upgrade_path("r1", "r2")
    assert only.path == str(R1_R2)
    assert check_step(only, r1, r2) == []


def test_r1_to_r2_maps_the_whole_hunt_sequence_code_list() -> None:
    rules = [r for r in load_step(R1_R2).rules if isinstance(r, MapCodes)]
    assert [(r.table, r.column, r.unmapped) for r in rules] == [("hunt_groups", "hunt_sequence", "error")]
    assert set(rules[0].map) == set(HUNT_SEQUENCES["r1"])
    assert set(rules[0].map.values()) <= set(HUNT_SEQUENCES["r2"])


def test_r1_to_r2_makes_one_contact_row_per_customer() -> None:
    (split,) = [r for r in load_step(R1_R2).rules if isinstance(r, SplitTable)]
    assert split.skip_when_all_null is False
    assert split.key == {"i_customer_contact": "i_customer", "i_customer": "i_customer"}


def test_check_step_reports_what_is_missing_or_wrong() -> None:
    r1, r2 = graph_for_release("r1"), graph_for_release("r2")
    doc = json.loads(R1_R2.read_text())
    doc["rules"] = [r for r in doc["rules"] if r["kind"] != "drop_column"]
    doc["rules"].append({"kind": "rename_column", "table": "accounts", "from": "no_such", "to": "x"})
    doc["rules"].append(
        {"kind": "add_column", "table": "nowhere", "column": "x", "type": "string", "default": "x"}
    )
    problems = check_step(parse_step(doc, path="broken.json"), r1, r2)
    assert any("accounts has no column 'no_such'" in p and "rule 5 (rename_column)" in p for p in problems)
    assert any("no table 'nowhere'" in p for p in problems)
    assert any("customers.fax would remain" in p for p in problems)
    assert len(problems) == 3


def test_check_step_compares_types_and_nullability(ab: tuple[Graph, Graph]) -> None:
    a, b = ab
    rules = [dict(r) for r in RULES_A_B]
    rules[4] = {**rules[4], "type": "int32"}  # level: int32, b says int64
    rules[2] = {**rules[2], "default": None}  # credit: null default, b says NOT NULL
    problems = check_step(step(rules), a, b)
    assert any("people.level would be int32, release b has int64" in p for p in problems)
    assert any("people.credit may be null, but it is NOT NULL in release b" in p for p in problems)
    assert check_step(step(RULES_A_B), a, b) == []
    assert any("goes to release b, the graph is of a" in p for p in check_step(step(RULES_A_B), a, a))


def test_a_translator_refuses_rules_that_do_not_fit(ab: tuple[Graph, Graph]) -> None:
    a, b = ab
    with pytest.raises(SpecError, match=r"people.fax would remain") as err:
        Translator(a, b, [step([r for r in RULES_A_B if r["kind"] != "drop_column"])])
    assert "<a-b>" in str(err.value)
    with pytest.raises(SpecError, match=r"table contacts of release b is made by no rule"):
        Translator(a, b, [step([r for r in RULES_A_B if r["kind"] != "split_table"])])


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["r1", "r2"])
def test_the_same_release_needs_no_step(release: str) -> None:
    assert upgrade_path(release, release) == []
    g = graph_for_release(release)
    assert translator_for(g, g).identity


def test_no_upgrade_path_is_refused_by_name() -> None:
    with pytest.raises(NoUpgradePath) as err:
        upgrade_path("r2", "r1")
    assert err.value.exit_code == ExitCode.FAILED
    line = err.value.line()
    assert "no upgrade path from release r2 to release r1" in line
    assert "r1 → r2" in line  # the known steps
    assert "load it into a target of release r2" in line and "bundle_spec/upgrades" in line
    with pytest.raises(NoUpgradePath, match="from release r1 to release r9"):
        upgrade_path("r1", "r9")


def test_steps_chain_along_the_shortest_path(tmp_path: Path, ab: tuple[Graph, Graph]) -> None:
    a, _ = ab
    for name, doc in {
        "a-b.json": {"from": "a", "to": "b", "rules": RULES_A_B},
        "b-c.json": {
            "from": "b",
            "to": "c",
            "rules": [{"kind": "rename_column", "table": "contacts", "from": "phone", "to": "telephone"}],
        },
        "c-d.json": {"from": "c", "to": "d", "rules": []},
        "x-y.json": {"from": "x", "to": "y", "rules": []},
    }.items():
        (tmp_path / name).write_text(json.dumps(doc))
    assert [s.name for s in upgrade_path("a", "d", directory=tmp_path)] == ["a → b", "b → c", "c → d"]
    assert [s.name for s in upgrade_path("b", "c", directory=tmp_path)] == ["b → c"]
    with pytest.raises(NoUpgradePath, match="known upgrade steps: a → b, b → c, c → d, x → y"):
        upgrade_path("d", "a", directory=tmp_path)

    contacts_c = json.loads(json.dumps(CONTACTS_B))
    contacts_c["columns"][3]["name"] = "telephone"
    c = graph("c", {"people": PEOPLE_B, "contacts": contacts_c, "animals": ANIMALS_B})
    translator = translator_for(a, c, directory=tmp_path)
    bundle = write_bundle(tmp_path / "x.bundle", {"people": people_a()})
    assert rows(translator, bundle, "contacts") == [
        {"i_contact": 1, "i_person": 1, "email": "ann@x", "telephone": None},
        {"i_contact": 2, "i_person": 2, "email": None, "telephone": "+1"},
        {"i_contact": 3, "i_person": 3, "email": None, "telephone": None},
    ]


def test_two_steps_for_the_same_pair_are_refused(tmp_path: Path) -> None:
    for name in ("one.json", "two.json"):
        (tmp_path / name).write_text(json.dumps({"from": "a", "to": "b", "rules": []}))
    with pytest.raises(SpecError, match=r"two upgrade steps a → b: .*one.json and .*two.json"):
        upgrade_path("a", "b", directory=tmp_path)


# -- rule files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (
            {"from": "a", "to": "b", "rules": [{"kind": "rename_column", "table": "t", "from": "x"}]},
            "rules/0",
        ),
        (
            {
                "from": "a",
                "to": "b",
                "rules": [{"kind": "drop_column", "table": "t", "column": "x", "extra": 1}],
            },
            "rules/0",
        ),
        ({"from": "a", "to": "b", "rules": [{"kind": "explode", "table": "t"}]}, "rules/0/kind"),
        (
            {
                "from": "a",
                "to": "b",
                "rules": [{"kind": "add_column", "table": "t", "column": "c", "type": "text", "default": 1}],
            },
            "rules/0/type",
        ),
        (
            {
                "from": "a",
                "to": "b",
                "rules": [{"kind": "map_codes", "table": "t", "column": "c", "map": {}}],
            },
            "rules/0/map",
        ),
        (
            {
                "from": "a",
                "to": "b",
                "rules": [
                    {"kind": "map_codes", "table": "t", "column": "c", "map": {"A": "b"}, "unmapped": "drop"}
                ],
            },
            "rules/0/unmapped",
        ),
        (
            {
                "from": "a",
                "to": "b",
                "rules": [
                    {"kind": "split_table", "table": "t", "into": "u", "columns": [], "key": {"k": "id"}}
                ],
            },
            "rules/0/columns",
        ),
        ({"from": "a", "rules": []}, "(top)"),
    ],
)
def test_a_malformed_rule_file_is_refused_naming_the_file(
    tmp_path: Path, doc: dict[str, Any], where: str
) -> None:
    bad = tmp_path / "a-b.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(SpecError) as err:
        upgrade_path("a", "b", directory=tmp_path)
    assert f"upgrade step {bad} does not validate at {where}:" in str(err.value)
    assert err.value.exit_code == ExitCode.USAGE


def test_a_rule_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "a-b.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match=re.escape(f"upgrade step {bad} is not valid JSON")):
        load_step(bad)


def test_the_shipped_rule_files_validate() -> None:
    for path in sorted(UPGRADES_DIR.glob("*.json")):
        load_step(path)


# -- every rule kind on small data -------------------------------------------------------------


def test_every_rule_kind_on_small_data(tmp_path: Path, ab: tuple[Graph, Graph]) -> None:
    a, b = ab
    translator = Translator(a, b, [step(RULES_A_B)])
    bundle = write_bundle(tmp_path / "x.bundle", {"people": people_a(), "pets": pets_a()})
    assert translator.tables(["people", "pets"]) == ["people", "animals", "contacts"]
    assert translator.tables(["pets"]) == ["animals"]
    assert rows(translator, bundle, "people") == [
        {
            "id": i,
            "name": name,
            "nickname": nick,
            "mode": mode,
            "credit": Decimal("12.50000"),
            "since": date(2024, 2, 29),
            "level": 3,
            "remark": None,
        }
        for i, name, nick, mode in [
            (1, "ann", "a", "sequential"),
            (2, "bob", None, "random"),
            (3, "cy", "c", "sequential"),
        ]
    ]
    assert rows(translator, bundle, "contacts") == [
        {"i_contact": 1, "i_person": 1, "email": "ann@x", "phone": None},
        {"i_contact": 2, "i_person": 2, "email": None, "phone": "+1"},
        {"i_contact": 3, "i_person": 3, "email": None, "phone": None},
    ]
    # rename_table, and map_codes with unmapped=keep: unknown codes and nulls pass as they are
    assert rows(translator, bundle, "animals") == [
        {"i_pet": 7, "owner": 1, "species": "Felis"},
        {"i_pet": 8, "owner": 1, "species": "dog"},
        {"i_pet": 9, "owner": 2, "species": None},
    ]
    assert translator.source_of("animals") == "pets"
    assert translator.source_of("contacts") == "people"
    assert translator.split_origin("people") is None
    origin = translator.split_origin("contacts")
    assert origin is not None
    assert (origin.source, origin.parent, dict(origin.key)) == (
        "people",
        "people",
        {"i_contact": "id", "i_person": "id"},
    )


def test_split_can_skip_rows_whose_moved_columns_are_all_null(
    tmp_path: Path, ab: tuple[Graph, Graph]
) -> None:
    a, b = ab
    rules = [{**r, "skip_when_all_null": True} if r["kind"] == "split_table" else r for r in RULES_A_B]
    translator = Translator(a, b, [step(rules)])
    bundle = write_bundle(tmp_path / "x.bundle", {"people": people_a()})
    assert [r["i_contact"] for r in rows(translator, bundle, "contacts", batch_rows=2)] == [1, 2]
    assert len(rows(translator, bundle, "people")) == 3


def test_a_bundle_without_the_source_table_gives_no_batch(tmp_path: Path, ab: tuple[Graph, Graph]) -> None:
    a, b = ab
    translator = Translator(a, b, [step(RULES_A_B)])
    bundle = write_bundle(tmp_path / "x.bundle", {"people": people_a()})
    assert list(translator.batches(bundle, "animals")) == []
    with pytest.raises(SpecError, match="'pets' is not in the entity graph of release b"):
        list(translator.batches(bundle, "pets"))


def test_batches_are_bounded_and_can_select_columns(tmp_path: Path, ab: tuple[Graph, Graph]) -> None:
    a, b = ab
    translator = Translator(a, b, [step(RULES_A_B)])
    bundle = write_bundle(tmp_path / "x.bundle", {"people": people_a()})
    sizes = [batch.num_rows for batch in translator.batches(bundle, "people", batch_rows=2)]
    assert sizes == [2, 1]
    (batch,) = translator.batches(bundle, "people", columns=["name", "mode"])
    assert batch.schema.names == ["name", "mode"]
    assert batch.schema.field("name").nullable is False
    assert batch.to_pylist()[1] == {"name": "bob", "mode": "random"}


def test_an_unmapped_code_names_bundle_table_column_value_and_row(
    tmp_path: Path, ab: tuple[Graph, Graph]
) -> None:
    a, b = ab
    translator = Translator(a, b, [step(RULES_A_B)])
    bundle = write_bundle(tmp_path / "x.bundle", {"people": people_a(mode=["Order", "Bogus", "Weird"])})
    with pytest.raises(UnmappedCode) as err:
        list(translator.batches(bundle, "people"))
    line = err.value.line()
    assert line.startswith(
        f"bundle {bundle.name}: people.mode of row id=2 holds 'Bogus', a code the upgrade a → b"
    )
    assert "2 rows have unmapped codes: 'Bogus', 'Weird'" in line
    assert "add it to the map_codes rule of people.mode in <a-b>" in line
    assert err.value.exit_code == ExitCode.FAILED
    assert isinstance(err.value, BundlerError)


def test_translate_key_and_column(ab: tuple[Graph, Graph]) -> None:
    a, b = ab
    translator = Translator(a, b, [step(RULES_A_B)])
    assert translator.translate_key("pets", {"owner": {"name": "ann"}, "species": "cat"}) == (
        "animals",
        {"owner": {"name": "ann"}, "species": "Felis"},
    )
    assert translator.translate_key("people", {"name": "ann"}) == ("people", {"name": "ann"})
    assert translator.translate_key("pets", {}) == ("animals", {})
    assert translator.translate_column("people", "nick") == ("people", "nickname")
    assert translator.translate_column("people", "fax") == ("people", None)
    assert translator.translate_column("people", "email") == ("contacts", "email")
    assert translator.translate_column("pets", "owner") == ("animals", "owner")


def test_translate_key_maps_codes_and_renames() -> None:
    a = graph("a", {"modes": table_doc([("i", "int32", False), ("code", "string", False)], ["i"], ["code"])})
    b = graph("b", {"modes": table_doc([("i", "int32", False), ("kode", "string", False)], ["i"], ["kode"])})
    translator = Translator(
        a,
        b,
        [
            step(
                [
                    {"kind": "map_codes", "table": "modes", "column": "code", "map": {"Order": "sequential"}},
                    {"kind": "rename_column", "table": "modes", "from": "code", "to": "kode"},
                ]
            )
        ],
    )
    assert translator.translate_key("modes", {"code": "Order"}) == ("modes", {"kode": "sequential"})
    with pytest.raises(UnmappedCode, match=r"modes\.code of row code='Nope' holds 'Nope'"):
        translator.translate_key("modes", {"code": "Nope"})


def test_integer_codes_are_mapped_in_the_column_type(tmp_path: Path) -> None:
    spec = table_doc([("i", "int32", False), ("period", "int32", True)], ["i"], ["i"])
    a, b = graph("a", {"t": spec}), graph("b", {"t": spec})
    translator = Translator(
        a, b, [step([{"kind": "map_codes", "table": "t", "column": "period", "map": {"1": 10, "2": "20"}}])]
    )
    data = pa.table({"i": [1, 2, 3], "period": [1, 2, None]}, schema=a.table("t").arrow_schema())
    bundle = write_bundle(tmp_path / "x.bundle", {"t": data})
    assert [r["period"] for r in rows(translator, bundle, "t")] == [10, 20, None]
    assert translator.translate_key("t", {"i": 1}) == ("t", {"i": 1})


def test_a_default_that_does_not_fit_its_type_is_a_spec_problem(ab: tuple[Graph, Graph]) -> None:
    a, b = ab
    rules = [{**r, "default": "soon"} if r.get("column") == "since" else r for r in RULES_A_B]
    problems = check_step(step(rules), a, b)
    assert any("default 'soon' of people.since is not a date32" in p for p in problems)


# -- the real releases -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r1_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    from bundler.export import ExportOptions, export_root
    from tests.export.fixture import NOW, build

    tmp = tmp_path_factory.mktemp("r1")
    result = export_root(
        build("sqlite:///" + str(tmp / "s.db")),
        "customer",
        "acme",
        tmp / "out",
        options=ExportOptions(now=NOW),
    )
    with open_bundle(result.path) as bundle:
        yield bundle


def test_an_r1_bundle_becomes_r2(r1_bundle: Bundle) -> None:
    r1, r2 = graph_for_release("r1"), graph_for_release("r2")
    translator = translator_for(r1, r2)
    tables = translator.tables(r1_bundle.tables())
    assert set(tables) == set(r1_bundle.tables()) | {"customer_contacts"}
    assert tables.index("customers") < tables.index("customer_contacts")

    source = {t: [r for b in r1_bundle.iter_batches(t) for r in b.to_pylist()] for t in r1_bundle.tables()}
    for table in tables:
        got = rows(translator, r1_bundle, table)
        if table == "customer_contacts":
            assert got == [
                {"i_customer_contact": c["i_customer"], "i_customer": c["i_customer"]}
                | {k: c[k] for k in ("firstname", "lastname", "email", "phone", "address")}
                for c in source["customers"]
            ]
        elif table == "customers":
            expected = [
                {
                    k: v
                    for k, v in c.items()
                    if k not in ("fax", "firstname", "lastname", "email", "phone", "address")
                }
                for c in source["customers"]
            ]
            for row in expected:
                row["company_name"] = row.pop("companyname")
            assert got == expected
        elif table == "accounts":
            assert got == [a | {"lang": "en"} for a in source["accounts"]]
        elif table == "hunt_groups":
            assert [h["hunt_sequence"] for h in got] == ["sequential"]
            assert [h | {"hunt_sequence": "Order"} for h in got] == source["hunt_groups"]
        else:
            assert got == source[table], table
    assert translator.translate_key("customers", {"name": "acme"}) == ("customers", {"name": "acme"})
    assert translator.translate_key("hunt_groups", {"i_customer": {"name": "acme"}, "name": "Sales"}) == (
        "hunt_groups",
        {"i_customer": {"name": "acme"}, "name": "Sales"},
    )
    assert r1_bundle.manifest.prerequisites
    for table, entry in r1_bundle.manifest.prerequisites.items():
        for row in entry.rows:
            assert translator.translate_key(table, row.key) == (table, row.key)
    origin = translator.split_origin("customer_contacts")
    assert origin is not None and origin.parent == "customers" and origin.source == "customers"
    assert origin.key["i_customer_contact"] == "i_customer"


class _Spy:
    """A bundle that hands out given batch objects, to see the translator pass them on untouched."""

    def __init__(self, bundle: Bundle) -> None:
        self.inner = bundle
        self.name = bundle.name
        self.handed: list[pa.RecordBatch] = []

    def tables(self) -> dict[str, Any]:
        return self.inner.tables()

    def iter_batches(self, table: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        for batch in self.inner.iter_batches(table, batch_rows):
            self.handed.append(batch)
            yield batch


def test_r1_to_r1_passes_batches_through_untouched(r1_bundle: Bundle) -> None:
    r1 = graph_for_release("r1")
    translator = translator_for(r1, r1)
    assert translator.tables(r1_bundle.tables()) == [
        t for t in r1.dependency_order if t in r1_bundle.tables()
    ]
    spy = _Spy(r1_bundle)
    for table in r1_bundle.tables():
        out = list(translator.batches(spy, table))  # type: ignore[arg-type]
        assert all(o is h for o, h in zip(out, spy.handed, strict=True))
        assert all(o.schema.equals(r1.table(table).arrow_schema()) for o in out)
        spy.handed.clear()


def test_r2_to_r2_passes_batches_through_untouched(r1_bundle: Bundle, tmp_path: Path) -> None:
    r1, r2 = graph_for_release("r1"), graph_for_release("r2")
    up = translator_for(r1, r2)
    written = {
        t: pa.Table.from_batches(list(up.batches(r1_bundle, t)), schema=r2.table(t).arrow_schema())
        for t in up.tables(r1_bundle.tables())
    }
    r2_bundle = write_bundle(tmp_path / "r2.bundle", written)
    translator = translator_for(r2, r2)
    assert translator.identity
    spy = _Spy(r2_bundle)
    for table in written:
        out = list(translator.batches(spy, table))  # type: ignore[arg-type]
        assert all(o is h for o, h in zip(out, spy.handed, strict=True))
        assert pa.Table.from_batches(out).equals(written[table])
        spy.handed.clear()


# -- properties --------------------------------------------------------------------------------

_text = st.one_of(st.none(), st.text(max_size=12))


@st.composite
def _people(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(min_value=0, max_value=40))
    ids = draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=n, max_size=n, unique=True))
    return pa.table(
        {
            "id": ids,
            "name": draw(st.lists(st.text(max_size=8), min_size=n, max_size=n)),
            "nick": draw(st.lists(_text, min_size=n, max_size=n)),
            "fax": draw(st.lists(_text, min_size=n, max_size=n)),
            "mode": draw(st.lists(st.sampled_from(["Order", "Random"]), min_size=n, max_size=n)),
            "email": draw(st.lists(_text, min_size=n, max_size=n)),
            "phone": draw(st.lists(_text, min_size=n, max_size=n)),
        },
        schema=graph("a", {"people": PEOPLE_A, "pets": PETS_A}).table("people").arrow_schema(),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_people(), batch_rows=st.integers(min_value=1, max_value=16), skip=st.booleans())
def test_renamed_split_and_mapped_batches_keep_rows_and_values(
    data: pa.Table, batch_rows: int, skip: bool
) -> None:
    rules = [{**r, "skip_when_all_null": skip} if r["kind"] == "split_table" else r for r in RULES_A_B]
    a = graph("a", {"people": PEOPLE_A, "pets": PETS_A})
    b = graph("b", {"people": PEOPLE_B, "contacts": CONTACTS_B, "animals": ANIMALS_B})
    translator = Translator(a, b, [step(rules)])
    source = data.to_pylist()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_bundle(Path(tmp) / "x.bundle", {"people": data})
        people = rows(translator, bundle, "people", batch_rows)
        contacts = rows(translator, bundle, "contacts", batch_rows)
    codes = {"Order": "sequential", "Random": "random"}
    assert len(people) == len(source)
    assert [(p["id"], p["name"], p["nickname"], p["mode"]) for p in people] == [
        (s["id"], s["name"], s["nick"], codes[s["mode"]]) for s in source
    ]
    kept = [s for s in source if not skip or s["email"] is not None or s["phone"] is not None]
    assert contacts == [
        {"i_contact": s["id"], "i_person": s["id"], "email": s["email"], "phone": s["phone"]} for s in kept
    ]
