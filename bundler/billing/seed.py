"""A deterministic synthetic operator for the reference billing system.

:func:`seed_source` fills every table of a release with a realistic, varied operator:
prerequisites, generic configuration (tariffs with rates over thousands of destinations,
products, plans, ...), vendors with their DIDs and vendor xDRs, resellers with
sub-resellers and their customers, retail customers and distributors with accounts, sites,
invoices, payments, PBX objects, inventory, and xDRs over the three months before ``now``.
:func:`seed_target` prepares the other side of a migration: the same prerequisites and part
of the same configuration under different ids, some of it with different content, plus
configuration only the target has, and no customers.

Determinism: the same arguments give exactly the same rows, ids included, on SQLite,
PostgreSQL and MariaDB. Every value comes from :class:`random.Random` instances seeded from
``seed`` and a section name (never the global generator, never the clock), so the
configuration of a seed does not depend on how many customers or xDRs are asked for, and
:func:`seed_target` regenerates exactly the configuration :func:`seed_source` wrote. r1 and
r2 draw the same numbers: a customer, account or xDR has the same id and values in both
releases, only laid out as each release's schema wants (r2: ``company_name``,
``customer_contacts``, ``accounts.lang``, its own hunt-sequence codes).

Writes go through :func:`bundler.bulk.insert_arrow` (COPY, LOAD DATA, executemany) in one
transaction; xDRs are generated column-wise in batches of :data:`XDR_BATCH_ROWS`, so memory
stays bounded whatever their number. Money values have at most 15 significant digits.
"""

# The generated data is deliberately non-ASCII (en dashes, curly quotes, Greek capitals).
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import bisect
import contextlib
import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bundler.billing.schema import BILLING_PERIODS, CUSTOMER_TYPES, HUNT_SEQUENCES, build_metadata
from bundler.bulk import arrow_schema_for, insert_arrow
from bundler.export.window import current_period
from bundler.progress import NullProgress, Progress

__all__ = ["DEFAULT_NOW", "XDR_BATCH_ROWS", "init_db", "seed_source", "seed_target"]

#: The default "now" of a generated operator: xDRs fall in the three months before it.
DEFAULT_NOW = datetime(2026, 11, 15, 12, 0, 0)
#: Rows per generated xDR batch (memory is bounded by this, not by the xDR count).
XDR_BATCH_ROWS = 100_000
#: How far back usage goes.
USAGE_DAYS = 92
#: Closed accounts stopped calling this many days before ``now``.
CLOSED_QUIET_DAYS = 30

Row = dict[str, Any]
Rows = dict[str, list[Row]]

_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


# -- engines and schema -------------------------------------------------------------------


def _engine(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    """An engine for a URL (made here, to dispose) or the engine given."""
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    from bundler.db import connect

    return connect(url_or_engine, create=True), True


def init_db(url_or_engine: str | Engine, release: str) -> None:
    """Create the schema of ``release`` (``"r1"`` or ``"r2"``); existing tables are kept."""
    engine, own = _engine(url_or_engine)
    try:
        build_metadata(release).create_all(engine)
    finally:
        if own:
            engine.dispose()


# -- value helpers ------------------------------------------------------------------------


def _money(units: int) -> Decimal:
    """A 5-decimal money value from integer units of 0.00001."""
    return Decimal(units).scaleb(-5)


def _price(rng: random.Random, low: str, high: str) -> Decimal:
    lo, hi = int(Decimal(low) * 100_000), int(Decimal(high) * 100_000)
    return _money(rng.randint(lo, hi))


def _instant(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A random moment in [start, end), with microseconds."""
    span = (end - start) // _US
    return start + timedelta(microseconds=rng.randrange(max(span, 1)))


def _day(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randrange(max((end - start).days, 1)))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _maybe(rng: random.Random, p_none: float, value: Any) -> Any:
    return None if rng.random() < p_none else value


def _add(rows: Rows, table: str, pk: str | None, row: Row) -> Row:
    """Append a row, giving it the next explicit id (1, 2, ...) when ``pk`` is named."""
    bucket = rows.setdefault(table, [])
    if pk is not None:
        row = {pk: len(bucket) + 1, **row}
    bucket.append(row)
    return row


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


# -- reference data -----------------------------------------------------------------------

CURRENCIES = [("USD", "US Dollar", 2), ("EUR", "Euro", 2), ("GBP", "Pound Sterling", 2), ("JPY", "Yen", 0)]
#: Currencies customers, products and tariffs are in (JPY exists, used by one tariff only).
TRADING = ("USD", "EUR", "GBP")

COUNTRIES: list[tuple[str, str]] = [
    ("United States", "1"),
    ("Canada", "1204"),
    ("United Kingdom", "44"),
    ("Deutschland", "49"),
    ("France", "33"),
    ("España", "34"),
    ("Italia", "39"),
    ("Nederland", "31"),
    ("België", "32"),
    ("Österreich", "43"),
    ("Schweiz", "41"),
    ("Polska", "48"),
    ("Česko", "420"),
    ("Türkiye", "90"),
    ("Ελλάδα", "30"),
    ("Россия", "7"),
    ("日本", "81"),
    ("中国", "86"),
    ("대한민국", "82"),
    ("India", "91"),
    ("Brasil", "55"),
    ("México", "52"),
    ("Argentina", "54"),
    ("Côte d’Ivoire", "225"),
    ("Sénégal", "221"),
    ("Nigeria", "234"),
    ("South Africa", "27"),
    ("Egypt", "20"),
    ("Australia", "61"),
    ("New Zealand", "64"),
    ("Việt Nam", "84"),
    ("ประเทศไทย", "66"),
    ("Ísland", "354"),
    ("Danmark", "45"),
    ("Sverige", "46"),
    ("Norge", "47"),
    ("Suomi", "358"),
    ("Éire", "353"),
    ("Portugal", "351"),
    ("România", "40"),
]
DEST_KINDS = [
    "Fixed",
    "Mobile",
    "Mobile – Vodafone",
    "Mobile – Orange",
    "Premium",
    "Special services",
    "Toll-free",
]

COMPANIES = [
    "Müller & Söhne GmbH",
    "Société Télécom SARL",
    "Łódź Net Sp. z o.o.",
    "東京テレコム株式会社",
    "Acme Widgets Inc.",
    "O'Brien & Daughters Ltd",
    "Nordic Voice AB",
    'Café "Central" Wien',
    "São Paulo Dados Ltda",
    "Ελληνική Φωνή Α.Ε.",
    "Кировтелеком",
    "Smith, Jones & Partners LLP",
    "Zürich Data AG",
    "Æble Kommunikation ApS",
    "Dvořák a synové s.r.o.",
    "İstanbul İletişim A.Ş.",
    "Nguyễn Telecom",
    "한국통신 파트너스",
    "Back\\Slash Consulting",
    "Øresund Fiber",
]
FIRST_NAMES = [
    "José", "Zoë", "Søren", "Renée", "Björn", "Anaïs", "Łukasz", "Siobhán", "François", "Jürgen",
    "Ōta", "Ana", "John", "Mary", "Chloé", "Ümit", "Mei", "Ævar", "Nuño", "Grace",
]  # fmt: skip
LAST_NAMES = [
    "Müller", "García", "O'Connor", "Dvořák", "Nguyễn", "山田", "Kowalski", "Smith", "Żółć", "Íñiguez",
    "van der Berg", "D'Amico", "Brontë", "Ødegård", "Schröder", "Lefèvre",
]  # fmt: skip
STREETS = [
    "Hauptstraße {n}\n10115 Berlin",
    "{n} rue de l’Église\n75004 Paris",
    "1-{n} Chiyoda, Chiyoda-ku\n東京都 100-0001",
    "{n}B Baker Street\nLondon NW1 6XE",
    "ul. Piotrkowska {n}\n90-926 Łódź",
    "Calle de Alcalá {n}, 3º izq.\n28014 Madrid",
    "{n} Main St, Suite 400, Springfield, IL 62701",
    "Bahnhofstrasse {n}, 8001 Zürich",
]
NOTES = [
    "",
    "VIP — call before suspending",
    'Migrated from legacy system;\tref="A-17"',
    "Payment plan agreed 2026-03-01\nsecond line of the note",
    "Emoji ok 👍📞",
    "Backslash path C:\\billing\\export\\",
    "Kunde wünscht Rechnung per Post",
    "客户要求提供纸质发票",
    "50% discount, 'special' deal, see ticket #4711",
    "NULL",
]
LANGS = ["en", "de", "fr", "es", "ja", "pl", "pt-BR", "zh-Hans"]
TLDS = ["example.com", "example.de", "example.fr", "example.jp", "example.co.uk"]


# -- prerequisites ------------------------------------------------------------------------


def _gen_prerequisites(seed: int) -> Rows:
    rng = random.Random(f"{seed}:prerequisites")
    rows: Rows = {}
    for iso, name, digits in CURRENCIES:
        _add(rows, "currencies", None, {"iso_4217": iso, "name": name, "decimal_digits": digits})
    for name, processor in [
        ("Stripe", "stripe"),
        ("Authorize.Net", "authorize_net"),
        ("PayPal", "paypal"),
        ("SEPA Direct Debit", "sepa"),
        ("Bank transfer", None),
    ]:
        _add(rows, "payment_systems", "i_payment_system", {"name": name, "processor": processor})
    bodies = [
        "Invoice {{invoice_number}}\nDear {{customer.name}},\n\tAmount due: {{amount_due}} {{currency}}",
        'Rechnung {{invoice_number}} — Betrag: {{amount_due}} €\n"Vielen Dank"',
        "Facture n° {{invoice_number}}\nMontant TTC : {{amount_due}}",
        "請求書 {{invoice_number}}\n合計: {{amount_due}}",
        None,
    ]
    for i, name in enumerate(["Standard invoice", "Rechnung (DE)", "Facture (FR)", "請求書 (JP)", "Minimal"]):
        _add(rows, "templates", "i_template", {"type": "invoice", "name": name, "body": bodies[i]})
    for name, body in [
        ("Standard CSV upload", "prefix,country,description,price_1,price_n,interval_1,interval_n"),
        ("Excel upload (legacy)", "sheet=Rates;skip=2"),
        ("Vendor A-Z deck", 'columns="code";"rate";"effective"\\n'),
    ]:
        _add(rows, "templates", "i_template", {"type": "tariff_upload", "name": name, "body": body})
    for name, plugin in [
        ("No taxes", None),
        ("EU VAT", "eu_vat"),
        ("Avalara", "avalara"),
        ("SureTax", "suretax"),
    ]:
        _add(rows, "taxation_methods", "i_taxation_method", {"name": name, "plugin": plugin})
    for name, definition in [
        ("Weekends", "Sat-Sun 00:00-24:00"),
        ("Nights 22–06", "Mon-Fri 22:00-06:00"),
        ("Business hours", "Mon-Fri 08:00-18:00"),
    ]:
        _add(rows, "off_peak_periods", "i_off_peak_period", {"name": name, "definition": definition})
    for name in ["Least cost", "Quality first", "Premium routes", "Emergency only"]:
        _add(rows, "routing_plans", "i_routing_plan", {"name": name, "description": f"{name} routing"})
    for name in ["Gold", "Silver", "Bronze", "CLI routes"]:
        _add(rows, "routing_categories", "i_routing_category", {"name": name})
    for name, expression in [
        ("ASR above 40%", "asr > 0.40"),
        ("ACD above 3 min", "acd > 180"),
        ("Cheapest", "ORDER BY price"),
    ]:
        _add(rows, "routing_criteria", "i_routing_criteria", {"name": name, "expression": expression})
    for name in ["Default SIP", "Strict NAT", "Mobile IMS", "Trunk"]:
        attributes = f'{{"policy": "{name}", "session_timer": {rng.choice([900, 1800, 3600])}}}'
        _add(rows, "service_policies", "i_service_policy", {"name": name, "attributes": attributes})
    for name, kbps in [
        ("Basic 10M", 10_000),
        ("Fiber 1G", 1_000_000),
        ("Mobile 50M", 50_000),
        ("Throttled", 128),
    ]:
        _add(rows, "internet_access_policies", "i_access_policy", {"name": name, "bandwidth_kbps": kbps})
    for name, level in [("Low risk", 1), ("Medium risk", 3), ("High risk", 5), ("Sanctioned", 9)]:
        _add(rows, "geo_risk_profiles", "i_geo_risk_profile", {"name": name, "risk_level": level})
    for name, model in [
        ("Cisco SPA112", "Cisco SPA112 ATA"),
        ("Yealink T46U", "Yealink SIP-T46U"),
        ("Polycom VVX 411", "Poly VVX 411"),
        ("Grandstream GXP2170", "Grandstream GXP2170"),
        ("AVM FRITZ!Box 7590", "AVM FRITZ!Box 7590"),
    ]:
        _add(rows, "cpe_profiles", "i_cpe_profile", {"name": name, "vendor_model": model})
    for name, app_type in [
        ("Voicemail", "voicemail"),
        ("Auto attendant", "ivr"),
        ("Call queue", "queue"),
        ("Conference", "conference"),
    ]:
        _add(rows, "voice_applications", "i_voice_app", {"name": name, "app_type": app_type})
    for name, unit in [
        ("Voice Calls", "sec"),
        ("Internet Access", "kB"),
        ("Messaging", "msg"),
        ("DID usage", "day"),
    ]:
        _add(rows, "services", "i_service", {"name": name, "unit": unit})
    # no draws below: the rows above stay what they were
    for login, role, name in USERS:
        _add(rows, "users", "i_user", {"login": login, "role": role, "name": name})
    for name, event, body in NOTIFICATION_TEMPLATES:
        _add(
            rows,
            "notification_templates",
            "i_notification_template",
            {"name": name, "event": event, "body": body},
        )
    return rows


#: the root user (i_user 1) and the staff who manage customers
USERS = [
    ("root", "root", "Administrator"),
    ("m.keller", "staff", "Miriam Keller"),
    ("j.okafor", "staff", "Jide Okafor"),
    ("s.tanaka", "staff", "佐藤 たなか"),
]
NOTIFICATION_TEMPLATES = [
    ("Low balance", "low_balance", "Your balance is {{balance}} {{currency}}; please top up."),
    ("Account expiring", "expiry", "Your account {{account.id}} expires on {{expiration_date}}."),
    ("Invoice ready", "invoice", "Rechnung {{invoice_number}} ist bereit — 請求書"),
]


def _by_name(rows: Rows, table: str, pk: str) -> dict[str, int]:
    return {row["name"]: row[pk] for row in rows[table]}


# -- configuration ------------------------------------------------------------------------


def _gen_destinations(rng: random.Random, n: int) -> list[Row]:
    result: list[Row] = []
    taken: set[str] = set()
    per_country: dict[str, int] = {}
    for i in range(n):
        country, code = COUNTRIES[i % len(COUNTRIES)]
        k = per_country.get(country, 0)
        prefix = code if k == 0 else f"{code}{k}"
        while prefix in taken:
            k += 1
            prefix = f"{code}{k}"
        per_country[country] = k + 1
        taken.add(prefix)
        kind = DEST_KINDS[rng.randrange(len(DEST_KINDS))]
        description = _maybe(rng, 0.08, f"{country} – {kind}")
        result.append(
            {
                "i_dest": i + 1,
                "destination": prefix,
                "country": _maybe(rng, 0.02, country),
                "description": description,
            }
        )
    return result


def _gen_configuration(seed: int, prereq: Rows, destinations: int, now: datetime) -> Rows:
    rng = random.Random(f"{seed}:configuration")
    rows: Rows = {}
    templates = prereq["templates"]
    invoice_templates = [t["i_template"] for t in templates if t["type"] == "invoice"]
    upload_templates = [t["i_template"] for t in templates if t["type"] == "tariff_upload"]
    off_peak = [r["i_off_peak_period"] for r in prereq["off_peak_periods"]]
    routing_plans = [r["i_routing_plan"] for r in prereq["routing_plans"]]
    services = _by_name(prereq, "services", "i_service")
    geo = [r["i_geo_risk_profile"] for r in prereq["geo_risk_profiles"]]

    for name, type_, description in [
        ("Customer self-care", "customer", "Web self-care for customers"),
        ("Reseller portal", "reseller", "Full reseller access"),
        ("Account self-care", "account", "End-user portal — limited"),
        ("Read-only", "customer", None),
        ("Administrator (Ä)", "customer", ""),
    ]:
        _add(rows, "access_levels", "i_acl", {"name": name, "type": type_, "description": description})
    for iso in TRADING:
        for label, grace in [("Standard", 7), ("VIP", 30), ("Prepaid", 0)]:
            row = {
                "name": f"{label} {iso}",
                "iso_4217": iso,
                "i_invoice_template": rng.choice(invoice_templates),
                "grace_period": grace,
            }
            _add(rows, "customer_classes", "i_customer_class", row)
    for name in ["Residential", "Business", "Wholesale", "Mobile"]:
        _add(rows, "product_groups", "i_product_group", {"name": name})
    groups = _by_name(rows, "product_groups", "i_product_group")

    created_from = now - timedelta(days=5 * 365)
    created_to = now - timedelta(days=400)
    tariff_specs = [
        (f"{kind} {iso}", iso, kind)
        for iso in TRADING
        for kind in ("Retail Standard", "Retail Premium", "Wholesale")
    ]
    tariff_specs.append(("Asia Pacific JPY", "JPY", "Wholesale"))
    for name, iso, kind in tariff_specs:
        row = {
            "name": name,
            "iso_4217": iso,
            "i_off_peak_period": _maybe(rng, 0.5, rng.choice(off_peak)),
            "i_upload_template": _maybe(rng, 0.3, rng.choice(upload_templates)),
            "description": _maybe(rng, 0.2, f"{kind} rates in {iso}, valid from {created_to:%B %Y}"),
            "created": _instant(rng, created_from, created_to),
        }
        _add(rows, "tariffs", "i_tariff", row)
    for i, dest in enumerate(_gen_destinations(rng, destinations)):
        assert dest["i_dest"] == i + 1
        _add(rows, "destinations", None, dest)

    # Rates: every tariff over every destination, some with a second (newer) rate.
    base_from = datetime(now.year - 1, 1, 1)
    for tariff in rows["tariffs"]:
        cheap = tariff["name"].startswith("Wholesale")
        for dest in rows["destinations"]:
            price = _price(rng, "0.00100", "0.09000") if cheap else _price(rng, "0.00500", "0.95000")
            interval_1 = rng.choice([1, 30, 60])
            interval_n = rng.choice([1, 6, 60])
            _add(
                rows,
                "rates",
                "i_rate",
                {
                    "i_tariff": tariff["i_tariff"],
                    "i_dest": dest["i_dest"],
                    "price_1": price,
                    "price_n": price if rng.random() < 0.7 else _price(rng, "0.00100", "0.95000"),
                    "interval_1": interval_1,
                    "interval_n": interval_n,
                    "effective_from": base_from,
                },
            )
            if rng.random() < 0.05:
                _add(
                    rows,
                    "rates",
                    "i_rate",
                    {
                        "i_tariff": tariff["i_tariff"],
                        "i_dest": dest["i_dest"],
                        "price_1": _price(rng, "0.00100", "0.95000"),
                        "price_n": _price(rng, "0.00100", "0.95000"),
                        "interval_1": interval_1,
                        "interval_n": interval_n,
                        "effective_from": _instant(rng, now - timedelta(days=200), now + timedelta(days=60)),
                    },
                )

    tariffs = {t["name"]: t["i_tariff"] for t in rows["tariffs"]}
    for iso in TRADING:
        for label, group, fee in [
            ("Residential", "Residential", "4.99000"),
            ("Business PBX", "Business", "19.90000"),
            ("Mobile Unlimited", "Mobile", "29.00000"),
            ("SIP Trunk", "Wholesale", "0.00000"),
        ]:
            product = _add(
                rows,
                "products",
                "i_product",
                {
                    "name": f"{label} {iso}",
                    "iso_4217": iso,
                    "i_product_group": _maybe(rng, 0.1, groups[group]),
                    "i_routing_plan": _maybe(rng, 0.3, rng.choice(routing_plans)),
                    "maintenance_fee": Decimal(fee),
                    "description": rng.choice([None, "", f"{label} — {iso}", f"Produit « {label} »"]),
                },
            )
            voice_tariff = tariffs[f"{'Wholesale' if label == 'SIP Trunk' else 'Retail Standard'} {iso}"]
            entries = [("Voice Calls", "OUTGOING", voice_tariff)]
            if label != "SIP Trunk":
                entries.append(("Voice Calls", "INCOMING", tariffs[f"Retail Premium {iso}"]))
                entries.append(("Messaging", "SMS", tariffs[f"Retail Standard {iso}"]))
            if label in ("Mobile Unlimited", "Residential"):
                entries.append(("Internet Access", "DATA", tariffs[f"Retail Premium {iso}"]))
            for service, access_code, tariff in entries:
                _add(
                    rows,
                    "product_rating_entries",
                    "i_accessibility",
                    {
                        "i_product": product["i_product"],
                        "i_tariff": tariff,
                        "i_service": services[service],
                        "access_code": access_code,
                    },
                )

    dests = rows["destinations"]
    for set_name, group_names in [
        ("Geographic zones", ["Europe", "North America", "Asia–Pacific", "Africa", "Latin America"]),
        ("Mobile networks", ["Mobile EU", "Mobile World"]),
        ("Volume discount zones", ["Zone A", "Zone B", "Zone C (Übersee)"]),
    ]:
        dg_set = _add(rows, "destination_group_sets", "i_dest_group_set", {"name": set_name})
        for group_name in group_names:
            dest_group = _add(
                rows,
                "destination_groups",
                "i_dest_group",
                {"i_dest_group_set": dg_set["i_dest_group_set"], "name": group_name},
            )
            size = max(1, min(len(dests), rng.randint(5, 40)))
            for dest in sorted(rng.sample(dests, size), key=lambda d: d["i_dest"]):
                _add(
                    rows,
                    "destination_group_members",
                    None,
                    {"i_dest_group": dest_group["i_dest_group"], "i_dest": dest["i_dest"]},
                )
    for iso in TRADING:
        for label, limit in [
            ("Basic", "50.00000"),
            ("Business", "500.00000"),
            ("Unlimited-ish", "99999.99999"),
        ]:
            _add(
                rows,
                "spending_plans",
                "i_spending_plan",
                {"name": f"{label} {iso}", "iso_4217": iso, "spending_limit": Decimal(limit)},
            )
        for label in ["Static IP", "Voicemail to e-mail", "Call recording", "Extra number", "Fax to e-mail"]:
            subscription = _add(
                rows,
                "subscriptions",
                "i_subscription",
                {
                    "name": f"{label} {iso}",
                    "iso_4217": iso,
                    "activation_fee": _price(rng, "0", "25"),
                    "description": rng.choice(
                        [None, "", f"{label} (monthly)", f"{label} – inkl. Einrichtung"]
                    ),
                },
            )
            for periods in range(1, rng.randint(2, 4)):
                _add(
                    rows,
                    "subscription_fees",
                    "i_subscription_fee",
                    {
                        "i_subscription": subscription["i_subscription"],
                        "periods": periods,
                        "fee": _price(rng, "0.5", "15"),
                    },
                )
        for label in ["Volume 1000", "Volume 10k"]:
            _add(
                rows,
                "volume_discount_plans",
                "i_vd_plan",
                {
                    "name": f"{label} {iso}",
                    "iso_4217": iso,
                    "description": _maybe(rng, 0.3, f"{label} minutes in {iso}"),
                },
            )
    for name, rule in [
        ("E.164", r"^\+?(\d{6,15})$"),
        ("North America 10-digit", r"^1?([2-9]\d{9})$ => 1\1"),
        ("UK national", r"^0(\d{9,10})$ => 44\1"),
        ("DE national", r"^0(\d{5,12})$ => 49\1"),
        ("Japan 国内", r"^0(\d{9,10})$ => 81\1"),
    ]:
        _add(rows, "dialing_rules", "i_dialing_rule", {"name": name, "rule": rule})
    for name, calls in [("Consumer", 60), ("Business", 600), ("Call center", 6000)]:
        _add(
            rows,
            "fraud_traffic_profiles",
            "i_ftp",
            {"name": name, "i_geo_risk_profile": rng.choice(geo), "max_calls_per_hour": calls},
        )
    for name, definition in [
        (
            "Monthly usage",
            "SELECT i_account, sum(charged_amount)\nFROM xdrs\nWHERE bill_time >= :from\nGROUP BY 1",
        ),
        (
            "Top destinations",
            'SELECT country, count(*) AS "calls"\tFROM xdrs GROUP BY country ORDER BY 2 DESC',
        ),
        (
            "Überfällige Rechnungen",
            "SELECT * FROM invoices WHERE amount_paid < amount_due -- 'overdue' \\ check",
        ),
    ]:
        _add(rows, "custom_report_definitions", "i_custom_report", {"name": name, "definition": definition})
    for name, type_ in [
        ("VAT number", "text"),
        ("Contract ID", "text"),
        ("Kundennummer (alt)", "number"),
        ("営業担当", "list"),
    ]:
        _add(rows, "custom_field_names", "i_custom_field", {"name": name, "type": type_})
    for iso in TRADING:
        for label in ["Local numbers", "Toll-free numbers"]:
            _add(
                rows,
                "did_pricing_batches",
                "i_did_pricing_batch",
                {
                    "name": f"{label} {iso}",
                    "iso_4217": iso,
                    "activation_fee": _price(rng, "0", "10"),
                    "monthly_fee": _price(rng, "0.5", "5"),
                },
            )
    batches = [r["i_did_pricing_batch"] for r in rows["did_pricing_batches"]]
    for name in ["Geographic DIDs", "Toll-free DIDs", "Mobile DIDs", "Vanity numbers"]:
        _add(
            rows,
            "did_groups",
            "i_did_group",
            {"name": name, "i_did_pricing_batch": _maybe(rng, 0.25, rng.choice(batches))},
        )
    for name, node_type, ip in [
        ("sip-fra-1", "sip", "10.0.0.11"),
        ("sip-ams-1", "sip", "2001:db8::11"),
        ("radius-1", "radius", "10.0.1.5"),
        ("web-portal", "web", "192.0.2.80"),
    ]:
        _add(rows, "nodes", "i_node", {"name": name, "node_type": node_type, "ip_address": ip})
    return rows


# -- vendors ------------------------------------------------------------------------------

VENDOR_NAMES = [
    "Deutsche Telekom Wholesale",
    "BT Wholesale",
    "Orange International Carriers",
    "Tata Communications",
    "Telefónica Global Solutions",
    "NTT コミュニケーションズ",
    "Telia Carrier",
    "Zwölf Netze GmbH",
]


def _gen_vendors(seed: int, p: _Params, prereq: Rows, config: Rows, n_dids: int) -> Rows:
    rng = random.Random(f"{seed}:vendors")
    rows: Rows = {}
    nodes = [r["i_node"] for r in config["nodes"]]
    categories = [r["i_routing_category"] for r in prereq["routing_categories"]]
    criteria = [r["i_routing_criteria"] for r in prereq["routing_criteria"]]
    did_groups = [r["i_did_group"] for r in config["did_groups"]]
    pricing = [r["i_did_pricing_batch"] for r in config["did_pricing_batches"]]
    dests = config["destinations"]
    for v in range(p.vendors):
        base = VENDOR_NAMES[v % len(VENDOR_NAMES)]
        name = base if v < len(VENDOR_NAMES) else f"{base} {v // len(VENDOR_NAMES) + 1}"
        iso = TRADING[v % len(TRADING)]
        vendor = _add(
            rows,
            "vendors",
            "i_vendor",
            {
                "name": name,
                "iso_4217": iso,
                "i_billing_period": 4 if rng.random() < 0.8 else rng.choice([1, 2, 3]),
                "bill_status": "O" if v != 2 else "S",
                "balance": _money(rng.randint(-50_000_000_00, 50_000_000_00)),
                "creation_date": _instant(rng, p.now - timedelta(days=3000), p.now - timedelta(days=400)),
            },
        )
        tariff_ids = []
        for k in range(1 + (v % 2)):
            tariff = _add(
                rows,
                "vendor_tariffs",
                "i_vendor_tariff",
                {"i_vendor": vendor["i_vendor"], "name": f"{name} – A-Z {iso} #{k + 1}", "iso_4217": iso},
            )
            tariff_ids.append(tariff["i_vendor_tariff"])
            size = max(1, len(dests) * 2 // 5)
            start = rng.randrange(len(dests))
            for j in range(size):
                dest = dests[(start + j) % len(dests)]
                _add(
                    rows,
                    "vendor_rates",
                    "i_vendor_rate",
                    {
                        "i_vendor_tariff": tariff["i_vendor_tariff"],
                        "i_dest": dest["i_dest"],
                        "price": _price(rng, "0.00050", "0.20000"),
                        "effective_from": datetime(p.now.year - 1, 1 + (j % 12), 1),
                    },
                )
        for k in range(1 + (v % 3)):
            _add(
                rows,
                "connections",
                "i_connection",
                {
                    "i_vendor": vendor["i_vendor"],
                    "name": f"{name} / trunk {k + 1}",
                    "i_vendor_tariff": rng.choice(tariff_ids),
                    "i_node": _maybe(rng, 0.2, rng.choice(nodes)),
                    "i_routing_category": _maybe(rng, 0.3, rng.choice(categories)),
                    "i_routing_criteria": _maybe(rng, 0.5, rng.choice(criteria)),
                    "remote_ip": _maybe(
                        rng, 0.1, f"198.51.100.{10 + k + 3 * v}" if k % 2 == 0 else f"2001:db8:{v:x}::{k + 1}"
                    ),
                },
            )
        for k in range(1 + (v % 2)):
            _add(
                rows,
                "vendor_did_batches",
                "i_vendor_batch",
                {
                    "i_vendor": vendor["i_vendor"],
                    "name": f"{name} DIDs {2025 + k}",
                    "i_did_group": _maybe(rng, 0.2, rng.choice(did_groups)),
                },
            )
    batches = rows.get("vendor_did_batches", [])
    taken: set[str] = set()
    for i in range(n_dids if batches else 0):
        batch = batches[i % len(batches)]
        while True:
            country, code = rng.choice(
                [("United States", "1"), ("United Kingdom", "44"), ("Deutschland", "49"), ("France", "33")]
            )
            number = code + str(rng.randint(2, 9)) + _digits(rng, 9 if code == "1" else 8)
            if number not in taken:
                taken.add(number)
                break
        _add(
            rows,
            "did_numbers",
            "i_did_number",
            {
                "i_vendor_batch": batch["i_vendor_batch"],
                "number": number,
                "i_did_pricing_batch": _maybe(rng, 0.3, rng.choice(pricing)),
                "description": rng.choice([None, "", f"{country} geographic", f"{country} – Ortsnetz"]),
            },
        )
    return rows


# -- customers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    release: str
    seed: int
    customers: int
    resellers: int
    sub_resellers: int
    customers_per_reseller: int
    distributors: int
    accounts_per_customer: int
    xdrs_per_account: int
    xdrs: int | None
    vendor_xdrs: int | None
    vendors: int
    destinations: int
    now: datetime

    def account_count(self) -> int:
        holders = (
            self.customers
            + self.resellers * (1 + self.sub_resellers) * self.customers_per_reseller
            + self.distributors
        )
        return holders * self.accounts_per_customer


@dataclass
class _AccountUsage:
    """What xDR generation needs to know about an account."""

    i_account: int
    id: str
    billing_model: int
    balance_units: int
    per_second: bool
    closed: bool = False  # closed accounts have no usage in the last CLOSED_QUIET_DAYS
    period_starts: list[int] = field(default_factory=list)  # epoch µs, sorted
    period_ends: list[int] = field(default_factory=list)
    invoices: list[int] = field(default_factory=list)
    #: when its customer's current billing period began (its own period and time zone), epoch µs
    current_start_us: int = 0


#: Time zones of customers, by currency (None: UTC); drawn from their own random stream so
#: that every other value stays as it was.
TIME_ZONES = {
    "USD": ["America/New_York", "America/Chicago", "America/Los_Angeles", None],
    "EUR": ["Europe/Berlin", "Europe/Madrid", "Europe/Paris", None],
    "GBP": ["Europe/London", None],
}
#: Share of an open account's xDRs placed in its customer's current billing period, up to
#: ``now``: the current period has usage whatever day the seed runs.
CURRENT_SHARE = 4


def _periods(code: int, start: date, end: date) -> list[tuple[date, date]]:
    """Closed billing periods (first day, last day) of a period code that end before ``end``."""
    result = []
    if code == 4:
        d = _month_start(start)
        while _next_month(d) <= end:
            result.append((d, _next_month(d) - timedelta(days=1)))
            d = _next_month(d)
    elif code == 3:
        d = _month_start(start)
        while d < end:
            mid = d.replace(day=16)
            nxt = _next_month(d)
            for a, b in ((d, mid), (mid, nxt)):
                if b <= end and a >= _month_start(start):
                    result.append((a, b - timedelta(days=1)))
            d = nxt
    elif code == 2:
        d = start - timedelta(days=start.weekday())
        while d + timedelta(days=7) <= end:
            result.append((d, d + timedelta(days=6)))
            d += timedelta(days=7)
    else:
        d = start
        while d + timedelta(days=1) <= end:
            result.append((d, d))
            d += timedelta(days=1)
    return result


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _gen_customers(
    p: _Params, prereq: Rows, config: Rows, vendors: Rows
) -> tuple[Rows, list[tuple[int, int]], list[_AccountUsage]]:
    """Customers and everything they own, except xDRs.

    Returns the rows, the (customer, default site) pairs to set after the sites exist, and
    what xDR generation needs per account.
    """
    rng = random.Random(f"{p.seed}:customers")
    rows: Rows = {}
    now = p.now
    today = now.date()
    usage_start = (now - timedelta(days=USAGE_DAYS)).date()

    taxation = [r["i_taxation_method"] for r in prereq["taxation_methods"]]
    payment_systems = prereq["payment_systems"]
    invoice_templates = [t["i_template"] for t in prereq["templates"] if t["type"] == "invoice"]
    routing_plans = [r["i_routing_plan"] for r in prereq["routing_plans"]]
    service_policies = [r["i_service_policy"] for r in prereq["service_policies"]]
    access_policies = [r["i_access_policy"] for r in prereq["internet_access_policies"]]
    cpe_profiles = [r["i_cpe_profile"] for r in prereq["cpe_profiles"]]
    voice_apps = [r["i_voice_app"] for r in prereq["voice_applications"]]

    def by_currency(table: str, pk: str) -> dict[str, list[int]]:
        result: dict[str, list[int]] = {}
        for row in config[table]:
            result.setdefault(row["iso_4217"], []).append(row[pk])
        return result

    classes = by_currency("customer_classes", "i_customer_class")
    products = by_currency("products", "i_product")
    spending = by_currency("spending_plans", "i_spending_plan")
    vd_plans = by_currency("volume_discount_plans", "i_vd_plan")
    subscriptions = by_currency("subscriptions", "i_subscription")
    acls = [r["i_acl"] for r in config["access_levels"]]
    dialing = [r["i_dialing_rule"] for r in config["dialing_rules"]]
    ftps = [r["i_ftp"] for r in config["fraud_traffic_profiles"]]
    reports = [r["i_custom_report"] for r in config["custom_report_definitions"]]
    custom_fields = config["custom_field_names"]
    dest_groups = [r["i_dest_group"] for r in config["destination_groups"]]
    dids = list(vendors.get("did_numbers", []))
    rng.shuffle(dids)
    hunt_codes = HUNT_SEQUENCES[p.release]

    # Who is who: top-level units in a shuffled order, parents before their children.
    plan: list[tuple[int, int | None]] = []  # (type, parent position)
    kinds = ["reseller"] * p.resellers + ["retail"] * p.customers + ["distributor"] * p.distributors
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "retail":
            plan.append((1, None))
        elif kind == "distributor":
            plan.append((3, None))
        else:
            top = len(plan)
            plan.append((2, None))
            plan.extend((1, top) for _ in range(p.customers_per_reseller))
            for _ in range(p.sub_resellers):
                sub = len(plan)
                plan.append((2, top))
                plan.extend((1, sub) for _ in range(p.customers_per_reseller))

    closed_candidates = [i for i, (t, _parent) in enumerate(plan) if t == 1]
    closed = set(rng.sample(closed_candidates, min(2, max(0, len(closed_candidates) - 1))))
    open_ones = [i for i in range(len(plan)) if i not in closed]
    suspended = (
        set(rng.sample(open_ones, min(len(open_ones) - 1, max(1, len(plan) // 10)))) if open_ones else set()
    )
    account_ids: set[str] = set()
    macs: set[str] = set()
    usages: list[_AccountUsage] = []
    default_sites: list[tuple[int, int]] = []
    did_cursor = 0

    zones = random.Random(f"{p.seed}:time_zones")
    for position, (ctype, parent_pos) in enumerate(plan):
        i_customer = position + 1
        parent = rows["customers"][parent_pos] if parent_pos is not None else None
        iso = parent["iso_4217"] if parent else rng.choices(TRADING, weights=[5, 3, 2])[0]
        company = rng.random() < (1.0 if ctype != 1 else 0.6)
        first, last = _person(rng)
        base = COMPANIES[rng.randrange(len(COMPANIES))] if company else f"{first} {last}"
        if ctype == 2:
            base = f"{base} (Reseller)"
        elif ctype == 3:
            base = f"{base} (Distributor)"
        name = f"{base} #{i_customer}"
        status = "C" if position in closed else ("S" if position in suspended else "O")
        created = _instant(rng, now - timedelta(days=5 * 365), now - timedelta(days=120))
        period = rng.choices([4, 3, 2, 1], weights=[80, 8, 8, 4])[0]
        credit = _maybe(rng, 0.3, _money(rng.randint(0, 5_000) * 100_000))
        street = rng.choice(STREETS).format(n=rng.randint(1, 250))
        contact = {
            "firstname": _maybe(rng, 0.1, first),
            "lastname": _maybe(rng, 0.1, last),
            "email": _maybe(rng, 0.15, f"billing{i_customer}@{rng.choice(TLDS)}"),
            "phone": _maybe(
                rng, 0.2, f"+{rng.choice(['1', '44', '49', '33', '81'])} {_digits(rng, 3)} {_digits(rng, 7)}"
            ),
            "address": _maybe(rng, 0.1, street),
        }
        fax = rng.choice([None, None, None, "", f"+49 30 {_digits(rng, 7)}"])
        lang = rng.choice(LANGS)  # drawn in every release, so r1 and r2 stay in step
        customer: Row = {
            "i_customer": i_customer,
            "name": name,
            "i_customer_type": ctype,
            "i_parent": parent["i_customer"] if parent else None,
            "iso_4217": iso,
            "i_customer_class": _maybe(rng, 0.2, rng.choice(classes[iso])),
            "i_acl": _maybe(rng, 0.4, rng.choice(acls)),
            "i_taxation_method": rng.choice(taxation),
            "i_dialing_rule": _maybe(rng, 0.5, rng.choice(dialing)),
            "i_ftp": _maybe(rng, 0.5, rng.choice(ftps)),
            "i_custom_report": _maybe(rng, 0.8, rng.choice(reports)),
            "i_manager": 1 + i_customer % len(USERS),  # the root user or a staff member, no draw
            "i_default_site": None,
            "i_billing_period": period,
            "bill_status": status,
            "balance": _money(rng.randint(-200_000, 2_000_000) * 1_000 + rng.randint(0, 999)),
            "credit_limit": credit,
            "creation_date": created,
            "companyname": base if company else None,
            "company_name": base if company else None,
            "fax": fax,
            "notes": _maybe(rng, 0.4, rng.choice(NOTES)),
            **(contact if p.release == "r1" else {}),
        }
        time_zone = zones.choice(TIME_ZONES.get(iso, [None]))
        customer["time_zone"] = time_zone
        current_start = _epoch_us(current_period(BILLING_PERIODS[period], now, time_zone)[0])
        _add(rows, "customers", None, customer)
        if p.release == "r2":
            _add(rows, "customer_contacts", "i_customer_contact", {"i_customer": i_customer, **contact})

        # Sites, and the default site pointing back (the reference cycle).
        site_ids = []
        for label in rng.sample(
            ["Headquarters", "Zweigstelle Köln", "Branch office", "Entrepôt Lyon", "支店 大阪"],
            rng.randint(1, 3),
        ):
            site = _add(
                rows,
                "customer_sites",
                "i_customer_site",
                {
                    "i_customer": i_customer,
                    "name": label,
                    "address": _maybe(rng, 0.2, rng.choice(STREETS).format(n=rng.randint(1, 99))),
                },
            )
            site_ids.append(site["i_customer_site"])
        if rng.random() < 0.9:
            default_sites.append((i_customer, rng.choice(site_ids)))

        for feature in rng.sample(
            ["voice_dialing", "call_recording", "cli_trust", "music_on_hold", "clip", "call_barring"],
            rng.randint(1, 4),
        ):
            _add(
                rows,
                "customer_service_features",
                "i_cust_feature",
                {
                    "i_customer": i_customer,
                    "feature_name": feature,
                    "flag_value": rng.choice("YN~"),
                    "attributes": rng.choice([None, "", '{"limit": 5}', "mode=strict;notify=yes"]),
                },
            )

        # Invoices for each closed period of the usage window.
        periods = _periods(period, usage_start, today)
        customer_invoices: list[tuple[int, int, int]] = []
        for first_day, last_day in periods:
            net = rng.randint(0, 50_000) * 1_000 + rng.randint(0, 999)
            due = net + net // 5
            paid = rng.choice([due, due, due, 0, due // 2])
            invoice = _add(
                rows,
                "invoices",
                "i_invoice",
                {
                    "i_customer": i_customer,
                    "invoice_number": "",
                    "i_template": _maybe(rng, 0.1, rng.choice(invoice_templates)),
                    "iso_4217": iso,
                    "period_from": first_day,
                    "period_to": last_day,
                    "issue_date": datetime.combine(last_day + timedelta(days=1), datetime.min.time())
                    + timedelta(hours=rng.randint(1, 9), microseconds=rng.randrange(3_600_000_000)),
                    "amount_net": _money(net),
                    "amount_due": _money(due),
                    "amount_paid": _money(paid),
                },
            )
            invoice["invoice_number"] = f"INV-{first_day:%Y%m}-{invoice['i_invoice']:07d}"
            start_us = _epoch_us(datetime.combine(first_day, datetime.min.time()))
            end_us = _epoch_us(datetime.combine(last_day + timedelta(days=1), datetime.min.time()))
            customer_invoices.append((start_us, end_us, invoice["i_invoice"]))

        method_ids: list[int] = []
        for _ in range(rng.choices([0, 1, 2], weights=[3, 6, 1])[0]):
            system = rng.choice(payment_systems)
            kind = rng.choice(["VISA", "MasterCard", "AmEx", "SEPA", "PayPal"])
            method = _add(
                rows,
                "payment_methods",
                "i_payment_method",
                {
                    "i_customer": i_customer,
                    "i_payment_system": system["i_payment_system"],
                    "payment_method": kind,
                    "token": "",
                    "number": None
                    if kind == "PayPal"
                    else (
                        f"DE89 **** **** {_digits(rng, 4)}"
                        if kind == "SEPA"
                        else f"************{_digits(rng, 4)}"
                    ),
                    "exp_date": None
                    if kind in ("SEPA", "PayPal")
                    else date(now.year + rng.randint(0, 4), rng.randint(1, 12), 1),
                    "name_on_card": _maybe(rng, 0.3, f"{first} {last}".upper()),
                },
            )
            method["token"] = f"tok_{rng.getrandbits(64):016x}{method['i_payment_method']:06d}"
            method_ids.append(method["i_payment_method"])
        for _ in range(rng.randint(0, 4)):
            payment = _add(
                rows,
                "payments",
                "i_payment",
                {
                    "i_customer": i_customer,
                    "i_payment_method": rng.choice(method_ids) if method_ids and rng.random() < 0.8 else None,
                    "iso_4217": iso,
                    "amount": _money(rng.randint(1_000, 500_000) * 1_000),
                    "payment_time": _instant(rng, now - timedelta(days=USAGE_DAYS), now),
                    "transaction_id": "",
                    "notes": rng.choice(
                        [None, None, "", "Manual payment — bank transfer", 'Überweisung, Ref. "X-1"']
                    ),
                },
            )
            payment["transaction_id"] = f"TX-{payment['i_payment']:08d}-{rng.getrandbits(32):08X}"
        if credit is not None:
            changes = sorted({_instant(rng, created, now) for _ in range(rng.randint(1, 3))})
            for changed_at in changes:
                _add(
                    rows,
                    "credit_limit_history",
                    "i_cl_history",
                    {
                        "i_customer": i_customer,
                        "credit_limit": _maybe(rng, 0.2, _money(rng.randint(0, 5_000) * 100_000)),
                        "changed_at": changed_at,
                    },
                )
        for cf in custom_fields:
            if rng.random() < 0.5:
                value = rng.choice(
                    [None, "", f"DE{_digits(rng, 9)}", f"K-{i_customer:05d}", "山田 太郎", "n/a"]
                )
                _add(
                    rows,
                    "custom_field_values",
                    "i_cf_value",
                    {"i_customer": i_customer, "i_custom_field": cf["i_custom_field"], "value": value},
                )
        if rng.random() < 0.4 and vd_plans.get(iso) and dest_groups:
            seen: set[tuple[int, int, date]] = set()
            month = _month_start(today)
            for _ in range(rng.randint(1, 3)):
                key = (
                    rng.choice(vd_plans[iso]),
                    rng.choice(dest_groups),
                    _month_start(month - timedelta(days=rng.randint(0, 40))),
                )
                if key in seen:
                    continue
                seen.add(key)
                _add(
                    rows,
                    "volume_discount_counters",
                    "i_vd_counter",
                    {
                        "i_customer": i_customer,
                        "i_vd_plan": key[0],
                        "i_dest_group": key[1],
                        "period_start": key[2],
                        "peak_level": rng.randint(0, 3),
                        "used": _money(rng.randint(0, 10_000_000)),
                    },
                )

        # Accounts (resellers have none: their customers do).
        if ctype == 2:
            continue
        accounts: list[Row] = []
        for _ in range(p.accounts_per_customer):
            while True:
                if rng.random() < 0.9:
                    cc = {"USD": "1", "EUR": rng.choice(["49", "33", "34"]), "GBP": "44"}[iso]
                    account_id = cc + str(rng.randint(2, 9)) + _digits(rng, 9 if cc == "1" else 8)
                else:
                    who = rng.choice(["alice", "bob", "zoë", "jürgen", "office", "fax"])
                    account_id = f"{who}.{rng.randint(1, 99_999)}@sip.{rng.choice(TLDS)}"
                if account_id not in account_ids:
                    account_ids.add(account_id)
                    break
            model = -1 if rng.random() < 0.4 else 1
            balance_units = rng.randint(0, 10_000) * 1_000 + rng.randint(0, 999)
            activation = _day(rng, created.date(), today - timedelta(days=100))
            acct_status = (
                "C"
                if status == "C"
                else ("S" if status == "S" and rng.random() < 0.7 else ("S" if rng.random() < 0.03 else "O"))
            )
            account = _add(
                rows,
                "accounts",
                "i_account",
                {
                    "id": account_id,
                    "i_customer": i_customer,
                    "i_product": rng.choice(products[iso]),
                    "iso_4217": iso,
                    "billing_model": model,
                    "bill_status": acct_status,
                    "balance": _money(balance_units),
                    "credit_limit": None
                    if model == -1
                    else _maybe(rng, 0.3, _money(rng.randint(0, 1_000) * 100_000)),
                    "opening_balance": _money(rng.choice([0, 0, 500_000, 2_000_000])),
                    "activation_date": activation,
                    "expiration_date": _maybe(rng, 0.85, _day(rng, today, today + timedelta(days=900))),
                    "i_notification_template": len(rows.get("accounts", [])) % 4 or None,  # no draw
                    "i_routing_plan": _maybe(rng, 0.6, rng.choice(routing_plans)),
                    "i_service_policy": _maybe(rng, 0.5, rng.choice(service_policies)),
                    "i_access_policy": _maybe(rng, 0.7, rng.choice(access_policies)),
                    "i_vd_plan": _maybe(rng, 0.7, rng.choice(vd_plans[iso])),
                    "i_spending_plan": _maybe(rng, 0.7, rng.choice(spending[iso])),
                    "h323_password": rng.choice(
                        [
                            None,
                            "",
                            "".join(
                                rng.choice("abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#%")
                                for _ in range(12)
                            ),
                        ]
                    ),
                    "blocked": "Y" if rng.random() < 0.05 else "N",
                    "lang": lang if rng.random() < 0.7 else rng.choice(LANGS),
                },
            )
            if p.release == "r1":
                del account["lang"]
            accounts.append(account)
            usage = _AccountUsage(
                i_account=account["i_account"],
                id=account_id,
                billing_model=model,
                balance_units=balance_units,
                per_second=rng.random() < 0.3,
                closed=acct_status == "C",
                current_start_us=current_start,
            )
            for start_us, end_us, i_invoice in customer_invoices:
                usage.period_starts.append(start_us)
                usage.period_ends.append(end_us)
                usage.invoices.append(i_invoice)
            usages.append(usage)

            for feature in rng.sample(
                [
                    "forward_mode",
                    "voice_mail",
                    "call_waiting",
                    "clir",
                    "first_login_greeting",
                    "sip_static_contact",
                ],
                rng.randint(1, 3),
            ):
                _add(
                    rows,
                    "account_service_features",
                    "i_acc_feature",
                    {
                        "i_account": account["i_account"],
                        "feature_name": feature,
                        "flag_value": rng.choice("YN~"),
                        "attributes": rng.choice(
                            [None, "", "follow_me;timeout=20", f"email={account_id}"[:255]]
                        ),
                    },
                )
            for subscription_id in rng.sample(subscriptions[iso], rng.choice([0, 1, 1, 2])):
                start = _day(rng, activation, today + timedelta(days=1))
                _add(
                    rows,
                    "account_subscriptions",
                    "i_account_subscription",
                    {
                        "i_account": account["i_account"],
                        "i_subscription": subscription_id,
                        "start_date": start,
                        "finish_date": _maybe(rng, 0.7, start + timedelta(days=rng.randint(30, 720))),
                        "discount_rate": _maybe(
                            rng,
                            0.6,
                            Decimal(rng.choice(["0.00", "5.00", "10.00", "12.50", "33.33", "100.00"])),
                        ),
                    },
                )
            if rng.random() < 0.3:
                _add(
                    rows,
                    "sim_cards",
                    "i_sim_card",
                    {
                        "i_customer": i_customer,
                        "i_account": account["i_account"],
                        "icc_id": "",
                        "imsi": f"{rng.choice(['262', '208', '234', '310'])}{_digits(rng, 12)}",
                        "pin": _maybe(rng, 0.4, _digits(rng, 4)),
                        "status": rng.choice(["active", "active", "inactive", "blocked"]),
                    },
                )
            if rng.random() < 0.3:
                while True:
                    mac = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
                    if mac not in macs:
                        macs.add(mac)
                        break
                _add(
                    rows,
                    "cpe_inventory",
                    "i_cpe",
                    {
                        "i_customer": i_customer,
                        "i_account": _maybe(rng, 0.1, account["i_account"]),
                        "i_cpe_profile": rng.choice(cpe_profiles),
                        "mac": mac,
                        "serial": f"SN{rng.getrandbits(40):010X}",
                    },
                )
            for _ in range(rng.choices([0, 1, 2], weights=[6, 3, 1])[0]):
                if did_cursor >= len(dids):
                    break
                did = dids[did_cursor]
                did_cursor += 1
                _add(
                    rows,
                    "did_assignments",
                    "i_did_assignment",
                    {
                        "i_account": account["i_account"],
                        "i_did_number": did["i_did_number"],
                        "assigned_from": _instant(
                            rng, datetime.combine(activation, datetime.min.time()), now
                        ),
                    },
                )
        if rng.random() < 0.2:  # a spare SIM in the customer's stock
            _add(
                rows,
                "sim_cards",
                "i_sim_card",
                {
                    "i_customer": i_customer,
                    "i_account": None,
                    "icc_id": "",
                    "imsi": f"{rng.choice(['262', '208', '234', '310'])}{_digits(rng, 12)}",
                    "pin": None,
                    "status": "inactive",
                },
            )

        # Cloud PBX: extensions, hunt groups with members, call queues.
        if accounts and rng.random() < 0.6:
            extensions = []
            for n in range(rng.randint(2, 6)):
                person = " ".join(_person(rng))
                extension = _add(
                    rows,
                    "extensions",
                    "i_extension",
                    {
                        "i_customer": i_customer,
                        "i_account": rng.choice(accounts)["i_account"] if rng.random() < 0.7 else None,
                        "extension_number": str(100 + n),
                        "name": rng.choice(["Reception", "Sales", "Support", "Buchhaltung", person, person]),
                    },
                )
                extensions.append(extension["i_extension"])
            hunt_ids = []
            for h in range(rng.randint(0, 2)):
                pick = rng.random()
                hunt = _add(
                    rows,
                    "hunt_groups",
                    "i_hunt_group",
                    {
                        "i_customer": i_customer,
                        "name": ["Sales line", "Support — 1st level", "Zentrale"][h],
                        "hunt_group_number": str(500 + h),
                        "hunt_sequence": hunt_codes[int(pick * len(hunt_codes))],
                    },
                )
                hunt_ids.append(hunt["i_hunt_group"])
                for position_in_group, ext in enumerate(
                    rng.sample(extensions, rng.randint(1, len(extensions))), start=1
                ):
                    _add(
                        rows,
                        "hunt_group_members",
                        None,
                        {
                            "i_hunt_group": hunt["i_hunt_group"],
                            "i_extension": ext,
                            "position": position_in_group,
                        },
                    )
            if hunt_ids and rng.random() < 0.7:
                _add(
                    rows,
                    "call_queues",
                    "i_call_queue",
                    {
                        "i_customer": i_customer,
                        "i_hunt_group": _maybe(rng, 0.2, rng.choice(hunt_ids)),
                        "i_voice_app": _maybe(rng, 0.3, rng.choice(voice_apps)),
                        "name": rng.choice(["Main queue", "Warteschlange", "File d’attente"]),
                        "max_waiting": rng.choice([5, 10, 20, 50]),
                    },
                )

    for sim in rows.get("sim_cards", []):
        sim["icc_id"] = f"8949{sim['i_sim_card']:09d}{_digits(rng, 6)}"
    return rows, default_sites, usages


# -- usage (xDRs) -------------------------------------------------------------------------------

_XDR_COLUMNS = [
    "i_xdr", "i_account", "i_service", "i_dest", "i_invoice", "call_id", "cli", "cld", "connect_time",
    "disconnect_time", "bill_time", "charged_amount", "charged_quantity", "used_quantity",
    "account_balance", "country", "description",
]  # fmt: skip


def _decimal_array(units: Sequence[int | None], type_: pa.Decimal128Type) -> pa.Array:
    """A decimal128 array from integer units of 10**-scale (no Decimal objects made)."""
    n = len(units)
    data = b"".join(((0 if u is None else u).to_bytes(16, "little", signed=True)) for u in units)
    if None in units:
        validity = pa.array([u is not None for u in units]).buffers()[1]
        return pa.Array.from_buffers(
            type_, n, [validity, pa.py_buffer(data)], null_count=sum(u is None for u in units)
        )
    return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(data)])


def _counts(rng: random.Random, n_accounts: int, total: int) -> list[int]:
    """``total`` split over accounts unevenly (some busy, some quiet), summing exactly."""
    if n_accounts == 0:
        return []
    weights = [rng.lognormvariate(0, 0.8) for _ in range(n_accounts)]
    scale = total / sum(weights)
    raw = [w * scale for w in weights]
    counts = [int(r) for r in raw]
    rest = total - sum(counts)
    order = sorted(range(n_accounts), key=lambda i: (counts[i] - raw[i], i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


@dataclass
class _Recording:
    call_id: str
    account_id: str
    recorded_at_us: int
    duration: int


def _xdr_batches(
    p: _Params,
    schema: pa.Schema,
    usages: list[_AccountUsage],
    services: dict[str, int],
    destinations: list[Row],
    total: int,
    recordings: list[_Recording],
) -> Iterator[pa.RecordBatch]:
    rng = random.Random(f"{p.seed}:xdrs")
    rnd = rng.random
    getrandbits = rng.getrandbits
    counts = _counts(rng, len(usages), total)
    end = p.now - timedelta(hours=2)
    start_us = _epoch_us(end - timedelta(days=USAGE_DAYS))
    window_us = _epoch_us(end) - start_us
    voice, data_service, sms = services["Voice Calls"], services["Internet Access"], services["Messaging"]
    dests = [(d["i_dest"], d["destination"], d["country"], d["description"]) for d in destinations]
    n_dests = len(dests)
    rate_units = [500 + (i * 7919) % 40_000 for i in range(n_dests)]
    hosts = ["10.0.0.11", "sip-ams-1.example.net", "[2001:db8::11]"]
    money_type = schema.field("charged_amount").type
    record_every = max(1, len(usages) // 12)
    quiet_us = CLOSED_QUIET_DAYS * 86_400_000_000

    cols: dict[str, list[Any]] = {c: [] for c in _XDR_COLUMNS}
    i_xdr = 0

    def flush() -> pa.RecordBatch:
        arrays = []
        for name in _XDR_COLUMNS:
            values = cols[name]
            type_ = schema.field(name).type
            if name in ("charged_amount", "account_balance"):
                arrays.append(_decimal_array(values, money_type))
            else:
                arrays.append(pa.array(values, type=type_))
            cols[name] = []
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([schema.field(c) for c in _XDR_COLUMNS]))

    (
        c_id,
        c_acc,
        c_srv,
        c_dest,
        c_inv,
        c_call,
        c_cli,
        c_cld,
        c_conn,
        c_disc,
        c_bill,
        c_amt,
        c_cq,
        c_uq,
        c_bal,
        c_cty,
        c_desc,
    ) = (cols[c] for c in _XDR_COLUMNS)
    now_us = _epoch_us(p.now)
    for index, (usage, k) in enumerate(zip(usages, counts, strict=True)):
        span_us = window_us - quiet_us if usage.closed else window_us
        recent = 0 if usage.closed or k == 0 else max(1, k // CURRENT_SHARE)
        current_us = max(1, now_us - usage.current_start_us)
        connects = sorted(
            [start_us + int(rnd() * span_us) for _ in range(k - recent)]
            + [usage.current_start_us + int(rnd() * current_us) for _ in range(recent)]
        )
        balance = usage.balance_units
        starts, ends, invoices = usage.period_starts, usage.period_ends, usage.invoices
        record = index % record_every == 0
        for connect in connects:
            i_xdr += 1
            kind = rnd()
            if kind < 0.72:
                d = int(rnd() * n_dests)
                i_dest, prefix, country, description = dests[d]
                used = int(rng.expovariate(1 / 150)) + 1
                if used > 7200:
                    used = 7200
                charged = used if usage.per_second else -(-used // 60) * 60
                amount = rate_units[d] * charged // 60
                service = voice
                cld = prefix + str(int(rnd() * 10**9)).zfill(9)
                duration_us = used * 1_000_000 + int(rnd() * 1_000_000)
                cli: str | None = usage.id
            elif kind < 0.87:
                i_dest, country = None, None
                used = int(rnd() * 500_000) + 1
                charged = -(-used // 1024) * 1024
                amount = charged // 1024 * 150
                service = data_service
                cld = None
                description = "" if rnd() < 0.05 else "Internet session"
                duration_us = int(rnd() * 3_600_000_000)
                cli = usage.id
            else:
                d = int(rnd() * n_dests)
                i_dest, prefix, country, _desc = dests[d]
                used = charged = 1
                amount = 1_000 + int(rnd() * 7_000)
                service = sms
                cld = prefix + str(int(rnd() * 10**8)).zfill(8)
                description = "SMS"
                duration_us = 0
                cli = usage.id if rnd() < 0.97 else None
            disconnect = min(connect + duration_us, now_us - 1)  # no usage after now
            balance = balance - amount if usage.billing_model == -1 else balance + amount
            pos = bisect.bisect_right(starts, disconnect) - 1
            invoice = invoices[pos] if pos >= 0 and disconnect < ends[pos] else None
            call_id = f"{getrandbits(96):024x}{i_xdr:08x}@{hosts[i_xdr % 3]}"
            if record and service == voice:
                recordings.append(_Recording(call_id, usage.id, connect, used))
                record = False
            c_id.append(i_xdr)
            c_acc.append(usage.i_account)
            c_srv.append(service)
            c_dest.append(i_dest)
            c_inv.append(invoice)
            c_call.append(call_id)
            c_cli.append(cli)
            c_cld.append(cld)
            c_conn.append(connect)
            c_disc.append(disconnect)
            c_bill.append(disconnect)
            c_amt.append(amount)
            c_cq.append(charged)
            c_uq.append(used)
            c_bal.append(balance)
            c_cty.append(country)
            c_desc.append(description)
            if len(c_id) >= XDR_BATCH_ROWS:
                yield flush()
                (
                    c_id,
                    c_acc,
                    c_srv,
                    c_dest,
                    c_inv,
                    c_call,
                    c_cli,
                    c_cld,
                    c_conn,
                    c_disc,
                    c_bill,
                    c_amt,
                    c_cq,
                    c_uq,
                    c_bal,
                    c_cty,
                    c_desc,
                ) = (cols[c] for c in _XDR_COLUMNS)
    if c_id:
        yield flush()


def _vendor_xdr_batches(
    p: _Params, schema: pa.Schema, connections: list[Row], total: int
) -> Iterator[pa.RecordBatch]:
    rng = random.Random(f"{p.seed}:vendor_xdrs")
    end = p.now - timedelta(hours=2)
    start_us = _epoch_us(end - timedelta(days=USAGE_DAYS))
    window_us = _epoch_us(end) - start_us
    names = [
        "i_vendor_xdr",
        "i_connection",
        "call_id",
        "connect_time",
        "bill_time",
        "duration",
        "charged_amount",
    ]
    fields = pa.schema([schema.field(n) for n in names])
    n_conn = len(connections)
    done = 0
    while done < total and n_conn:
        size = min(XDR_BATCH_ROWS, total - done)
        ids = list(range(done + 1, done + size + 1))
        conn_col, call_col, connect_col, bill_col, dur_col, amt_col = [], [], [], [], [], []
        for i in ids:
            connect = start_us + int(rng.random() * window_us)
            duration = int(rng.expovariate(1 / 150)) + 1
            conn_col.append(connections[i % n_conn]["i_connection"])
            call_col.append(f"v-{rng.getrandbits(64):016x}-{i:010d}")
            connect_col.append(connect)
            bill_col.append(connect + duration * 1_000_000 + int(rng.random() * 1_000_000))
            dur_col.append(duration)
            amt_col.append(duration * (50 + int(rng.random() * 2_000)) // 60)
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(ids, pa.int64()),
                pa.array(conn_col, pa.int64()),
                pa.array(call_col, pa.string()),
                pa.array(connect_col, pa.timestamp("us")),
                pa.array(bill_col, pa.timestamp("us")),
                pa.array(dur_col, pa.int64()),
                _decimal_array(amt_col, fields.field("charged_amount").type),
            ],
            schema=fields,
        )
        done += size


# -- writing ------------------------------------------------------------------------------------


def _write_rows(conn: Connection, table: sa.Table, rows: list[Row], progress: Progress) -> int:
    if not rows:
        return 0
    task = f"seed {table.name}"
    progress.start(task, len(rows))
    schema = arrow_schema_for(table)
    count = 0
    for start in range(0, len(rows), 50_000):
        chunk = rows[start : start + 50_000]
        count += insert_arrow(conn, table, pa.Table.from_pylist(chunk, schema=schema))
        progress.advance(task, len(chunk))
    progress.finish(task)
    return count


def _write_batches(
    conn: Connection, table: sa.Table, batches: Iterator[pa.RecordBatch], total: int, progress: Progress
) -> int:
    task = f"seed {table.name}"
    progress.start(task, total)
    count = 0
    for batch in batches:
        count += insert_arrow(conn, table, batch)
        progress.advance(task, batch.num_rows)
    progress.finish(task)
    return count


def _reset_sequences(conn: Connection, md: sa.MetaData) -> None:
    """PostgreSQL: move each serial/identity sequence past the explicit ids written."""
    if conn.dialect.name != "postgresql":
        return
    preparer = conn.dialect.identifier_preparer
    for table in md.sorted_tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or pk[0].autoincrement is False or not isinstance(pk[0].type, sa.Integer):
            continue
        column = pk[0].name
        name = preparer.format_table(table)
        conn.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence(:t, :c), m) FROM "
                f"(SELECT max({preparer.quote(column)}) AS m FROM {name}) s WHERE m IS NOT NULL"
            ),
            {"t": name, "c": column},
        )


#: SQLite page cache while seeding (KiB): inserting into the random-keyed unique index of
#: a million xDRs is 1.6x faster with the index in cache. Grows only as needed.
SQLITE_SEED_CACHE_KIB = 262_144


@contextlib.contextmanager
def _sqlite_cache(conn: Connection) -> Iterator[None]:
    """A larger SQLite page cache for the seeding connection, restored afterwards."""
    if conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_SEED_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(before or -2000)}")


def _write_all(
    conn: Connection, md: sa.MetaData, data: Rows, progress: Progress, *, late: tuple[str, ...] = ()
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in md.sorted_tables:
        if table.name in late:
            continue
        counts[table.name] = _write_rows(conn, table, data.get(table.name, []), progress)
    return counts


# -- public API ---------------------------------------------------------------------------------


def seed_source(
    engine: str | Engine,
    *,
    release: str = "r1",
    seed: int = 1,
    customers: int = 20,
    resellers: int = 2,
    sub_resellers: int = 1,
    customers_per_reseller: int = 3,
    distributors: int = 1,
    accounts_per_customer: int = 3,
    xdrs_per_account: int = 20,
    xdrs: int | None = None,
    vendor_xdrs: int | None = None,
    vendors: int = 2,
    destinations: int = 2000,
    now: datetime = DEFAULT_NOW,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Fill an empty database with a synthetic operator; return the rows written per table.

    The schema of ``release`` is created first if missing. ``customers`` retail customers,
    ``distributors`` distributors and ``resellers`` resellers are at the top; each reseller
    has ``sub_resellers`` sub-resellers, and each reseller and sub-reseller
    ``customers_per_reseller`` retail customers. Every retail customer and distributor has
    ``accounts_per_customer`` accounts (resellers have none). xDRs number ``xdrs`` if given,
    else accounts × ``xdrs_per_account``, spread unevenly over the accounts and over the
    ``USAGE_DAYS`` days before ``now``; vendor xDRs number ``vendor_xdrs`` if given, else
    a tenth of that (at least one per connection). Everything is written in one transaction.
    """
    progress = progress if progress is not None else NullProgress()
    p = _Params(
        release=release,
        seed=seed,
        customers=customers,
        resellers=resellers,
        sub_resellers=sub_resellers,
        customers_per_reseller=customers_per_reseller,
        distributors=distributors,
        accounts_per_customer=accounts_per_customer,
        xdrs_per_account=xdrs_per_account,
        xdrs=xdrs,
        vendor_xdrs=vendor_xdrs,
        vendors=vendors,
        destinations=destinations,
        now=now,
    )
    if destinations < 1:
        raise ValueError("destinations must be at least 1")
    md = build_metadata(release)
    eng, own = _engine(engine)
    try:
        md.create_all(eng)
        prereq = _gen_prerequisites(seed)
        config = _gen_configuration(seed, prereq, destinations, now)
        n_dids = math.ceil(p.account_count() * 0.45) + 5
        vendor_rows = _gen_vendors(seed, p, prereq, config, n_dids)
        owned, default_sites, usages = _gen_customers(p, prereq, config, vendor_rows)
        _vendor_counterpart(prereq, vendor_rows, owned, now)
        data: Rows = {**prereq, **config, **vendor_rows, **owned}
        total_xdrs = xdrs if xdrs is not None else len(usages) * xdrs_per_account
        connections = vendor_rows.get("connections", [])
        total_vendor = vendor_xdrs if vendor_xdrs is not None else max(total_xdrs // 10, len(connections))
        services = _by_name(prereq, "services", "i_service")
        late = ("xdrs", "vendor_xdrs", "call_recordings")
        with eng.begin() as conn, _sqlite_cache(conn):
            counts = _write_all(conn, md, data, progress, late=late)
            customers_table = md.tables["customers"]
            if default_sites:
                conn.execute(
                    customers_table.update()
                    .where(customers_table.c.i_customer == sa.bindparam("b_customer"))
                    .values(i_default_site=sa.bindparam("b_site")),
                    [{"b_customer": c, "b_site": s} for c, s in default_sites],
                )
            recordings: list[_Recording] = []
            xdr_table = md.tables["xdrs"]
            counts["xdrs"] = _write_batches(
                conn,
                xdr_table,
                _xdr_batches(
                    p,
                    arrow_schema_for(xdr_table),
                    usages,
                    services,
                    config["destinations"],
                    total_xdrs,
                    recordings,
                ),
                total_xdrs,
                progress,
            )
            vendor_table = md.tables["vendor_xdrs"]
            counts["vendor_xdrs"] = _write_batches(
                conn,
                vendor_table,
                _vendor_xdr_batches(p, arrow_schema_for(vendor_table), connections, total_vendor),
                total_vendor,
                progress,
            )
            counts["call_recordings"] = _write_rows(
                conn, md.tables["call_recordings"], _recording_rows(recordings), progress
            )
            _reset_sequences(conn, md)
        return counts
    finally:
        if own:
            eng.dispose()


#: the first vendor also buys from the operator (bilateral traffic exchange): its customer
#: counterpart, which the target must have before the vendor is loaded
COUNTERPART = VENDOR_NAMES[0]


def _counterpart_row(prereq: Rows, now: datetime) -> Row:
    """The customer the first vendor also is (no draws)."""
    return {
        "name": COUNTERPART,
        "i_customer_type": CUSTOMER_TYPES["retail"],
        "iso_4217": TRADING[0],
        "i_taxation_method": prereq["taxation_methods"][0]["i_taxation_method"],
        "i_manager": 1,
        "i_billing_period": 4,
        "bill_status": "O",
        "balance": _money(0),
        "creation_date": now - timedelta(days=400),
        "notes": "Bilateral traffic exchange: the customer side of the vendor of the same name.",
    }


def _vendor_counterpart(prereq: Rows, vendors: Rows, owned: Rows, now: datetime) -> None:
    """Add the first vendor's customer counterpart (after every other customer) and point the vendor at it."""
    if not vendors.get("vendors") or not owned.get("customers"):
        return
    template = owned["customers"][0]
    row: Row = dict.fromkeys(template)
    row["i_customer"] = len(owned["customers"]) + 1
    row.update(_counterpart_row(prereq, now))
    owned["customers"].append(row)
    if owned.get("customer_contacts"):  # r2: every customer has its contact row
        contact: Row = {k: None for k in owned["customer_contacts"][0] if k != "i_customer_contact"}
        _add(owned, "customer_contacts", "i_customer_contact", {**contact, "i_customer": row["i_customer"]})
    for vendor in vendors["vendors"]:
        vendor["i_customer"] = row["i_customer"] if vendor["name"] == COUNTERPART else None


def _recording_rows(recordings: list[_Recording]) -> list[Row]:
    rows: list[Row] = []
    for rec in recordings:
        at = _EPOCH + timedelta(microseconds=rec.recorded_at_us)
        digest = hashlib.sha256(rec.call_id.encode()).hexdigest()
        rows.append(
            {
                "i_call_recording": len(rows) + 1,
                "call_id": rec.call_id,
                "account_id": rec.account_id,
                "recorded_at": at,
                "duration": rec.duration,
                "file_name": f"{at:%Y/%m/%d}/{digest[:16]}.wav",
                "file_size": 44 + rec.duration * 16_000,
                "sha256": digest,
            }
        )
    return rows


# -- target -------------------------------------------------------------------------------------


def _content_columns(table: sa.Table) -> list[sa.Column[Any]]:
    """Columns that are neither key, reference, natural key nor binding (money): what may differ."""
    natural = set(table.info.get("natural_key", [])) | set(table.info.get("binding", []))
    return [
        c
        for c in table.columns
        if not c.primary_key and "ref" not in c.info and c.name not in natural and not c.unique
    ]


def _alter(rng: random.Random, column: sa.Column[Any], value: Any) -> Any:
    """A different value of the same type for ``column``."""
    if isinstance(value, Decimal):
        scale = getattr(column.type, "scale", None) or 0
        return value + Decimal(rng.randint(1, 99)).scaleb(-scale)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.randint(1, 9)
    if isinstance(value, datetime):
        return value + timedelta(days=rng.randint(1, 30), microseconds=rng.randrange(1_000_000))
    if isinstance(value, date):
        return value + timedelta(days=rng.randint(1, 30))
    length = getattr(column.type, "length", None) or 255
    text = f"{value or ''} (target)"
    return text[-length:] if len(text) > length else text


def seed_target(
    engine: str | Engine,
    *,
    release: str = "r2",
    seed: int = 1,
    overlap: float = 0.5,
    differing: float = 0.3,
    target_only: int = 2,
    destinations: int = 2000,
    now: datetime = DEFAULT_NOW,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Prepare a target for a migration from a source seeded with the same ``seed``.

    Written: every prerequisite of the source (same natural keys, other ids), a fraction
    ``overlap`` of the source's shared configuration, table by table (same natural keys,
    other ids; at least one row per table when ``overlap`` > 0; only rows whose non-null
    references are in the target can be picked, and a nullable reference to a row left out
    becomes NULL), of which a fraction ``differing`` has one content column
    changed (a description, a price, ...), and ``target_only`` extra rows per named
    configuration table (``"Target-only ..."``) and extra destinations. No customers,
    vendors or usage. Every id of the target differs from the source's id of the same row.
    ``destinations`` and ``now`` must be those the source was seeded with.
    """
    if not 0 <= overlap <= 1 or not 0 <= differing <= 1:
        raise ValueError("overlap and differing are fractions between 0 and 1")
    progress = progress if progress is not None else NullProgress()
    md = build_metadata(release)
    prereq = _gen_prerequisites(seed)
    config = _gen_configuration(seed, prereq, destinations, now)
    source: Rows = {**prereq, **config}
    rng = random.Random(f"{seed}:target:{overlap}:{differing}")
    target: Rows = {}
    id_maps: dict[str, dict[Any, Any]] = {}

    for table in md.sorted_tables:
        scope = table.info.get("scope")
        if scope not in ("prerequisite", "shared") or table.name not in source:
            continue
        rows = source[table.name]
        pk_cols = [c.name for c in table.primary_key.columns]
        surrogate = (
            len(pk_cols) == 1
            and "ref" not in table.c[pk_cols[0]].info
            and isinstance(table.c[pk_cols[0]].type, sa.Integer)
        )
        refs = {c.name: c.info["ref"].split(".")[0] for c in table.columns if "ref" in c.info}
        eligible: list[Row] = []
        for row in rows:
            new = dict(row)
            keep = True
            for column, ref_table in refs.items():
                value = row[column]
                if value is None or ref_table not in id_maps:
                    continue
                mapped = id_maps[ref_table].get(value)
                if mapped is None:
                    if table.c[column].nullable and not table.c[column].primary_key:
                        new[column] = None
                    else:
                        keep = False
                else:
                    new[column] = mapped
            if keep:
                eligible.append(new)
        if scope == "prerequisite":
            chosen = eligible
        else:
            k = round(overlap * len(eligible))
            if overlap > 0 and eligible:
                k = max(k, 1)
            chosen = [eligible[i] for i in sorted(rng.sample(range(len(eligible)), k))]
        if scope == "shared":
            content = _content_columns(table)
            for new in chosen:
                if content and rng.random() < differing:
                    changed = rng.choice(content)
                    new[changed.name] = _alter(rng, changed, new[changed.name])
            if target_only and "name" in table.c and table.info.get("natural_key") == ["name"] and chosen:
                for k in range(target_only):
                    extra = dict(rng.choice(chosen))
                    extra["name"] = f"Target-only {table.name.replace('_', ' ')} {k + 1}"
                    chosen.append(extra)
            if table.name == "destinations":
                for k in range(target_only):
                    chosen.append(
                        {
                            "i_dest": None,
                            "destination": f"99999{k}",
                            "country": "Target-only land",
                            "description": "Target-only destination",
                        }
                    )
        if surrogate:
            pk = pk_cols[0]
            order = list(range(len(chosen)))
            rng.shuffle(order)
            base = len(rows) + 100
            mapping: dict[Any, Any] = {}
            for position, index in enumerate(order):
                row = chosen[index]
                new_id = base + position + 1
                if (
                    row[pk] is not None
                    and row[pk] not in mapping
                    and not str(row.get("name", "")).startswith("Target-only")
                ):
                    mapping[row[pk]] = new_id
                row[pk] = new_id
            chosen = [chosen[i] for i in order]
            chosen.sort(key=lambda r: r[pk])
            id_maps[table.name] = mapping
        else:
            id_maps[table.name] = (
                {row[pk_cols[0]]: row[pk_cols[0]] for row in chosen} if len(pk_cols) == 1 else {}
            )
        target[table.name] = chosen

    eng, own = _engine(engine)
    try:
        md.create_all(eng)
        with eng.begin() as conn:
            counts = _write_all(conn, md, target, progress)
            _reset_sequences(conn, md)
        return counts
    finally:
        if own:
            eng.dispose()
