"""A small, hand-checked operator for closure tests.

Every row is written out here, so what each root's bundle must hold can be read off
this file. The comments on the expectations in test_closure.py refer to the ids below.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal as D
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.billing.schema import build_metadata

NOW = datetime(2026, 11, 15, 12, 0, 0)  # current monthly period: 2026-11-01 .. 2026-12-01
T0 = datetime(2026, 1, 1)

ROWS: dict[str, list[dict[str, Any]]] = {
    # prerequisites
    "currencies": [
        {"iso_4217": "USD", "name": "US Dollar", "decimal_digits": 2},
        {"iso_4217": "EUR", "name": "Euro", "decimal_digits": 2},
    ],
    "payment_systems": [{"i_payment_system": 1, "name": "Stripe", "processor": "stripe"}],
    "templates": [
        {"i_template": 1, "type": "invoice", "name": "Standard invoice", "body": "<html/>"},
        {"i_template": 2, "type": "tariff_upload", "name": "CSV upload", "body": None},
    ],
    "taxation_methods": [{"i_taxation_method": 1, "name": "None", "plugin": "none"}],
    "off_peak_periods": [{"i_off_peak_period": 1, "name": "Weekends", "definition": "wd{6-7}"}],
    "routing_plans": [{"i_routing_plan": 1, "name": "Default routing", "description": None}],
    "routing_categories": [{"i_routing_category": 1, "name": "Premium"}],
    "routing_criteria": [{"i_routing_criteria": 1, "name": "Cheapest", "expression": "cost"}],
    "service_policies": [{"i_service_policy": 1, "name": "SIP default", "attributes": ""}],
    "internet_access_policies": [{"i_access_policy": 1, "name": "10M", "bandwidth_kbps": 10000}],
    "geo_risk_profiles": [{"i_geo_risk_profile": 1, "name": "Low risk", "risk_level": 1}],
    "cpe_profiles": [{"i_cpe_profile": 1, "name": "Yealink T46", "vendor_model": "T46U"}],
    "voice_applications": [{"i_voice_app": 1, "name": "Queue music", "app_type": "ivr"}],
    "services": [
        {"i_service": 1, "name": "Voice", "unit": "second"},
        {"i_service": 2, "name": "Data", "unit": "byte"},
    ],
    "users": [
        {"i_user": 1, "login": "root", "role": "root", "name": "Administrator"},
        {"i_user": 2, "login": "jdoe", "role": "staff", "name": "Jane Doe"},
    ],
    "notification_templates": [
        {"i_notification_template": 1, "name": "Low balance", "event": "low_balance", "body": "Top up"},
    ],
    # generic configuration
    "access_levels": [
        {"i_acl": 1, "name": "Customer self-care", "type": "customer", "description": None},
        {"i_acl": 2, "name": "Unused level", "type": "customer", "description": "nobody uses it"},
    ],
    "customer_classes": [
        {
            "i_customer_class": 1,
            "name": "Business",
            "iso_4217": "USD",
            "i_invoice_template": 1,
            "grace_period": 5,
        },
        {
            "i_customer_class": 2,
            "name": "Residential",
            "iso_4217": "EUR",
            "i_invoice_template": 1,
            "grace_period": 0,
        },
    ],
    "product_groups": [{"i_product_group": 1, "name": "SIP trunks"}],
    "tariffs": [
        {
            "i_tariff": 1,
            "name": "T-Retail",
            "iso_4217": "USD",
            "i_off_peak_period": 1,
            "i_upload_template": 2,
            "description": "Retail tariff – Ünïcode",
            "created": T0,
        },
        {
            "i_tariff": 2,
            "name": "T-Other",
            "iso_4217": "EUR",
            "i_off_peak_period": None,
            "i_upload_template": None,
            "description": None,
            "created": T0,
        },
    ],
    "products": [
        {
            "i_product": 1,
            "name": "Business SIP",
            "iso_4217": "USD",
            "i_product_group": 1,
            "i_routing_plan": 1,
            "maintenance_fee": D("9.99000"),
            "description": "Für Geschäftskunden",
        },
        {
            "i_product": 2,
            "name": "Home SIP",
            "iso_4217": "EUR",
            "i_product_group": None,
            "i_routing_plan": None,
            "maintenance_fee": D("0.00000"),
            "description": "",
        },
    ],
    "product_rating_entries": [
        {"i_accessibility": 1, "i_product": 1, "i_tariff": 1, "i_service": 1, "access_code": "SIP"},
        {"i_accessibility": 2, "i_product": 2, "i_tariff": 2, "i_service": 1, "access_code": "SIP"},
    ],
    "destinations": [
        {"i_dest": 1, "destination": "44", "country": "United Kingdom", "description": None},
        {"i_dest": 2, "destination": "49", "country": "Deutschland", "description": None},
        {"i_dest": 3, "destination": "81", "country": "日本", "description": "Japan"},
        {"i_dest": 4, "destination": "225", "country": "Côte d’Ivoire", "description": None},
        {"i_dest": 5, "destination": "90", "country": "Türkiye", "description": None},
    ],
    "rates": [
        {
            "i_rate": 1,
            "i_tariff": 1,
            "i_dest": 1,
            "price_1": D("0.01000"),
            "price_n": D("0.01000"),
            "interval_1": 60,
            "interval_n": 60,
            "effective_from": T0,
        },
        {
            "i_rate": 2,
            "i_tariff": 1,
            "i_dest": 2,
            "price_1": D("0.02500"),
            "price_n": D("0.02000"),
            "interval_1": 30,
            "interval_n": 6,
            "effective_from": T0,
        },
        {
            "i_rate": 3,
            "i_tariff": 2,
            "i_dest": 5,
            "price_1": D("0.10000"),
            "price_n": D("0.10000"),
            "interval_1": 60,
            "interval_n": 60,
            "effective_from": T0,
        },
    ],
    "destination_group_sets": [
        {"i_dest_group_set": 1, "name": "VD zones"},
        {"i_dest_group_set": 2, "name": "Other"},
    ],
    "destination_groups": [
        {"i_dest_group": 1, "i_dest_group_set": 1, "name": "Europe"},
        {"i_dest_group": 2, "i_dest_group_set": 1, "name": "Africa"},
        {"i_dest_group": 3, "i_dest_group_set": 2, "name": "Asia"},
    ],
    "destination_group_members": [
        {"i_dest_group": 1, "i_dest": 1},
        {"i_dest_group": 1, "i_dest": 2},
        {"i_dest_group": 2, "i_dest": 4},
        {"i_dest_group": 3, "i_dest": 3},
    ],
    "spending_plans": [
        {"i_spending_plan": 1, "name": "Cap 100", "iso_4217": "USD", "spending_limit": D("100.00000")}
    ],
    "subscriptions": [
        {
            "i_subscription": 1,
            "name": "PBX seat",
            "iso_4217": "USD",
            "activation_fee": D("5.00000"),
            "description": None,
        },
        {
            "i_subscription": 2,
            "name": "Unused sub",
            "iso_4217": "USD",
            "activation_fee": D("0.00000"),
            "description": None,
        },
    ],
    "subscription_fees": [
        {"i_subscription_fee": 1, "i_subscription": 1, "periods": 1, "fee": D("12.50000")},
        {"i_subscription_fee": 2, "i_subscription": 1, "periods": 12, "fee": D("10.00000")},
        {"i_subscription_fee": 3, "i_subscription": 2, "periods": 1, "fee": D("1.00000")},
    ],
    "volume_discount_plans": [
        {"i_vd_plan": 1, "name": "Europe bundle", "iso_4217": "USD", "description": None}
    ],
    "dialing_rules": [{"i_dialing_rule": 1, "name": "UK national", "rule": "0->44"}],
    "fraud_traffic_profiles": [
        {"i_ftp": 1, "name": "Standard", "i_geo_risk_profile": 1, "max_calls_per_hour": 100}
    ],
    "custom_report_definitions": [{"i_custom_report": 1, "name": "Top callers", "definition": "SELECT 1"}],
    "custom_field_names": [
        {"i_custom_field": 1, "name": "VAT number", "type": "text"},
        {"i_custom_field": 2, "name": "Unused field", "type": "text"},
    ],
    "did_pricing_batches": [
        {
            "i_did_pricing_batch": 1,
            "name": "DID std",
            "iso_4217": "USD",
            "activation_fee": D("1.00000"),
            "monthly_fee": D("2.00000"),
        }
    ],
    "did_groups": [{"i_did_group": 1, "name": "London DIDs", "i_did_pricing_batch": 1}],
    "nodes": [{"i_node": 1, "name": "sbc-1", "node_type": "sbc", "ip_address": "10.0.0.1"}],
    # vendor
    "vendors": [
        {
            "i_vendor": 1,
            "name": "Carrier Ä",
            "iso_4217": "USD",
            "i_billing_period": 4,
            "bill_status": "O",
            "balance": D("-120.50000"),
            "creation_date": T0,
        },
        {
            "i_vendor": 2,
            "name": "Carrier B",
            "iso_4217": "EUR",
            "i_billing_period": 4,
            "bill_status": "O",
            "balance": D("0.00000"),
            "creation_date": T0,
        },
    ],
    "vendor_tariffs": [
        {"i_vendor_tariff": 1, "i_vendor": 1, "name": "VT-A", "iso_4217": "USD"},
        {"i_vendor_tariff": 2, "i_vendor": 2, "name": "VT-B", "iso_4217": "EUR"},
    ],
    "vendor_rates": [
        {"i_vendor_rate": 1, "i_vendor_tariff": 1, "i_dest": 1, "price": D("0.00500"), "effective_from": T0},
        {"i_vendor_rate": 2, "i_vendor_tariff": 1, "i_dest": 4, "price": D("0.05000"), "effective_from": T0},
        {"i_vendor_rate": 3, "i_vendor_tariff": 2, "i_dest": 5, "price": D("0.07000"), "effective_from": T0},
    ],
    "connections": [
        {
            "i_connection": 1,
            "i_vendor": 1,
            "name": "A-out",
            "i_vendor_tariff": 1,
            "i_node": 1,
            "i_routing_category": 1,
            "i_routing_criteria": 1,
            "remote_ip": "192.0.2.1",
        },
        {
            "i_connection": 2,
            "i_vendor": 2,
            "name": "B-out",
            "i_vendor_tariff": 2,
            "i_node": None,
            "i_routing_category": None,
            "i_routing_criteria": None,
            "remote_ip": None,
        },
    ],
    "vendor_did_batches": [{"i_vendor_batch": 1, "i_vendor": 1, "name": "A-DIDs", "i_did_group": 1}],
    "did_numbers": [
        {
            "i_did_number": 1,
            "i_vendor_batch": 1,
            "number": "442071230001",
            "i_did_pricing_batch": 1,
            "description": None,
        },
        {
            "i_did_number": 2,
            "i_vendor_batch": 1,
            "number": "442071230002",
            "i_did_pricing_batch": None,
            "description": "",
        },
    ],
    "vendor_xdrs": [
        {
            "i_vendor_xdr": 1,
            "i_connection": 1,
            "call_id": "v-1",
            "connect_time": datetime(2026, 11, 2, 9, 0, 0, 1),
            "bill_time": datetime(2026, 11, 2, 9, 1),
            "duration": 60,
            "charged_amount": D("0.00500"),
        },
        {
            "i_vendor_xdr": 2,
            "i_connection": 1,
            "call_id": "v-2",
            "connect_time": datetime(2026, 10, 2, 9, 0),
            "bill_time": datetime(2026, 10, 2, 9, 1),
            "duration": 60,
            "charged_amount": D("0.00500"),
        },
        {
            "i_vendor_xdr": 3,
            "i_connection": 2,
            "call_id": "v-3",
            "connect_time": datetime(2026, 11, 3, 9, 0),
            "bill_time": datetime(2026, 11, 3, 9, 1),
            "duration": 30,
            "charged_amount": D("0.03500"),
        },
    ],
}


def _customer(i: int, name: str, ctype: int, parent: int | None, **extra: Any) -> dict[str, Any]:
    row = {
        "i_customer": i,
        "name": name,
        "i_customer_type": ctype,
        "i_parent": parent,
        "iso_4217": "USD",
        "i_customer_class": None,
        "i_acl": None,
        "i_taxation_method": 1,
        "i_dialing_rule": None,
        "i_ftp": None,
        "i_custom_report": None,
        "i_manager": None,
        "i_default_site": None,
        "i_billing_period": 4,
        "bill_status": "O",
        "balance": D("0.00000"),
        "credit_limit": None,
        "creation_date": T0,
        "companyname": None,
        "fax": None,
        "firstname": None,
        "lastname": None,
        "email": None,
        "phone": None,
        "address": None,
        "notes": None,
    }
    row.update(extra)
    return row


# customers: 1 reseller R, 2 sub-reseller R2 (under R), 3 retail under R2, 4 retail A, 5 retail B,
# 6 distributor D, 7 closed Z, 8 retail E already Exported
CUSTOMERS = [
    _customer(1, "reseller-r", 2, None, i_manager=1),
    _customer(2, "sub-reseller-r2", 2, 1, bill_status="S"),
    _customer(3, "retail-under-r2", 1, 2),
    _customer(
        4,
        "acme",
        1,
        None,
        i_customer_class=1,
        i_acl=1,
        i_dialing_rule=1,
        i_ftp=1,
        i_custom_report=1,
        i_manager=2,
        balance=D("12.34567"),
        credit_limit=D("500.00000"),
        companyname="Acme Łódź Sp. z o.o.",
        fax="+48 42 000",
        firstname="Zoë",
        lastname="Åström",
        email="zoe@acme.example",
        phone="",
        address="ul. Piotrkowska 1\nŁódź",
        notes='línea 1; "quoted", tab\there',
    ),
    _customer(5, "bravo", 1, None, i_billing_period=1),
    _customer(6, "distri", 3, None),
    _customer(7, "zombie", 1, None, bill_status="C"),
    _customer(8, "gone", 1, None, bill_status="E"),
]


def _account(i: int, ident: str, customer: int, product: int, **extra: Any) -> dict[str, Any]:
    row = {
        "i_account": i,
        "id": ident,
        "i_customer": customer,
        "i_product": product,
        "iso_4217": "USD",
        "billing_model": 1,
        "bill_status": "O",
        "balance": D("0.00000"),
        "credit_limit": None,
        "opening_balance": D("0.00000"),
        "activation_date": date(2026, 1, 1),
        "expiration_date": None,
        "i_routing_plan": None,
        "i_service_policy": None,
        "i_access_policy": None,
        "i_vd_plan": None,
        "i_spending_plan": None,
        "i_notification_template": None,
        "h323_password": "s3cr3t",
        "blocked": "N",
    }
    row.update(extra)
    return row


ACCOUNTS = [
    _account(
        1,
        "acme-1",
        4,
        1,
        billing_model=-1,
        balance=D("3.14159"),
        i_routing_plan=1,
        i_service_policy=1,
        i_access_policy=1,
        i_vd_plan=1,
        i_spending_plan=1,
        i_notification_template=1,
    ),
    _account(2, "acme-2", 4, 1, bill_status="S", expiration_date=date(2027, 1, 1)),
    _account(3, "bravo-1", 5, 2),
    _account(4, "r2-cust-1", 3, 2),
    _account(5, "reseller-own-1", 1, 1),
    _account(6, "distri-1", 6, 2),
    _account(7, "acme-closed", 4, 1, bill_status="C"),
]

OWNED: dict[str, list[dict[str, Any]]] = {
    "customer_sites": [
        {"i_customer_site": 1, "i_customer": 4, "name": "HQ", "address": "Łódź"},
        {"i_customer_site": 2, "i_customer": 4, "name": "Branch", "address": None},
        {"i_customer_site": 3, "i_customer": 5, "name": "Home", "address": None},
    ],
    "customer_service_features": [
        {
            "i_cust_feature": 1,
            "i_customer": 4,
            "feature_name": "call_recording",
            "flag_value": "Y",
            "attributes": None,
        },
    ],
    "account_service_features": [
        {
            "i_acc_feature": 1,
            "i_account": 1,
            "feature_name": "voicemail",
            "flag_value": "Y",
            "attributes": "lang=pl",
        },
        {
            "i_acc_feature": 2,
            "i_account": 3,
            "feature_name": "voicemail",
            "flag_value": "N",
            "attributes": None,
        },
    ],
    "invoices": [
        {
            "i_invoice": 1,
            "i_customer": 4,
            "invoice_number": "INV-0001",
            "i_template": 1,
            "iso_4217": "USD",
            "period_from": date(2026, 10, 1),
            "period_to": date(2026, 10, 31),
            "issue_date": datetime(2026, 11, 1, 3),
            "amount_net": D("100.00000"),
            "amount_due": D("123.00000"),
            "amount_paid": D("0.00000"),
        },
    ],
    "payment_methods": [
        {
            "i_payment_method": 1,
            "i_customer": 4,
            "i_payment_system": 1,
            "payment_method": "VISA",
            "token": "tok_acme",
            "number": "************4242",
            "exp_date": date(2028, 12, 31),
            "name_on_card": "ZOË ÅSTRÖM",
        },
    ],
    "payments": [
        {
            "i_payment": 1,
            "i_customer": 4,
            "i_payment_method": 1,
            "iso_4217": "USD",
            "amount": D("50.00000"),
            "payment_time": datetime(2026, 11, 5, 10, 0, 0, 123456),
            "transaction_id": "ch_1",
            "notes": "Zahlung",
        },
        {
            "i_payment": 2,
            "i_customer": 5,
            "i_payment_method": None,
            "iso_4217": "USD",
            "amount": D("5.00000"),
            "payment_time": datetime(2026, 11, 6),
            "transaction_id": "ch_2",
            "notes": None,
        },
    ],
    "credit_limit_history": [
        {"i_cl_history": 1, "i_customer": 4, "credit_limit": None, "changed_at": T0},
        {
            "i_cl_history": 2,
            "i_customer": 4,
            "credit_limit": D("500.00000"),
            "changed_at": datetime(2026, 6, 1),
        },
    ],
    "extensions": [
        {"i_extension": 1, "i_customer": 4, "i_account": 1, "extension_number": "101", "name": "Reception"},
        {"i_extension": 2, "i_customer": 4, "i_account": None, "extension_number": "102", "name": "Fax"},
    ],
    "hunt_groups": [
        {
            "i_hunt_group": 1,
            "i_customer": 4,
            "name": "Sales",
            "hunt_group_number": "200",
            "hunt_sequence": "Order",
        },
    ],
    "hunt_group_members": [
        {"i_hunt_group": 1, "i_extension": 1, "position": 1},
        {"i_hunt_group": 1, "i_extension": 2, "position": 2},
    ],
    "call_queues": [
        {
            "i_call_queue": 1,
            "i_customer": 4,
            "i_hunt_group": 1,
            "i_voice_app": 1,
            "name": "Support",
            "max_waiting": 5,
        },
    ],
    "sim_cards": [
        {
            "i_sim_card": 1,
            "i_customer": 4,
            "i_account": 1,
            "icc_id": "8944000000000000001",
            "imsi": "234150000000001",
            "pin": "1234",
            "status": "active",
        },
    ],
    "cpe_inventory": [
        {
            "i_cpe": 1,
            "i_customer": 4,
            "i_account": 1,
            "i_cpe_profile": 1,
            "mac": "00:15:65:00:00:01",
            "serial": "SN1",
        },
    ],
    "did_assignments": [
        {"i_did_assignment": 1, "i_account": 1, "i_did_number": 1, "assigned_from": T0},
    ],
    "account_subscriptions": [
        {
            "i_account_subscription": 1,
            "i_account": 1,
            "i_subscription": 1,
            "start_date": date(2026, 1, 1),
            "finish_date": None,
            "discount_rate": D("10.00"),
        },
    ],
    "volume_discount_counters": [
        {
            "i_vd_counter": 1,
            "i_customer": 4,
            "i_vd_plan": 1,
            "i_dest_group": 1,
            "period_start": date(2026, 11, 1),
            "peak_level": 0,
            "used": D("12.00000"),
        },
    ],
    "custom_field_values": [{"i_cf_value": 1, "i_customer": 4, "i_custom_field": 1, "value": "PL1234567890"}],
}


def _xdr(
    i: int, account: int, when: datetime, dest: int | None, service: int = 1, **extra: Any
) -> dict[str, Any]:
    row = {
        "i_xdr": i,
        "i_account": account,
        "i_service": service,
        "i_dest": dest,
        "i_invoice": None,
        "call_id": f"call-{i}",
        "cli": "442070000000",
        "cld": "49300000000",
        "connect_time": when,
        "disconnect_time": when.replace(second=59),
        "bill_time": when.replace(microsecond=0),
        "charged_amount": D("0.01234"),
        "charged_quantity": 60,
        "used_quantity": 59,
        "account_balance": D("3.14159"),
        "country": None,
        "description": None,
    }
    row.update(extra)
    return row


XDRS = [
    # acme-1: three in November (current period), two in October (invoice 1)
    _xdr(1, 1, datetime(2026, 11, 2, 10, 0, 0, 250000), 1, country="United Kingdom"),
    _xdr(2, 1, datetime(2026, 11, 3, 11, 0, 0, 1), 3, country="日本"),  # dest 81: only usage references it
    _xdr(3, 1, datetime(2026, 11, 14, 23, 59, 0, 999999), None, service=2, cli="", cld=None),
    _xdr(4, 1, datetime(2026, 10, 20, 8, 0), 2, i_invoice=1),
    _xdr(5, 1, datetime(2026, 10, 31, 23, 59, 59), 2, i_invoice=1),
    # bravo-1 (daily period): one on NOW's day, one the day before
    _xdr(6, 3, datetime(2026, 11, 15, 8, 0), 5),
    _xdr(7, 3, datetime(2026, 11, 14, 8, 0), 5),
    # under the reseller
    _xdr(8, 4, datetime(2026, 11, 4, 8, 0), 1),
    _xdr(9, 5, datetime(2026, 11, 5, 8, 0), 1),
]


def build(url: str, release: str = "r1") -> sa.Engine:
    """Create the schema in ``url`` and write every fixture row; returns the engine."""
    from bundler.db import connect

    engine = connect(url, create=True)
    md = build_metadata(release)
    md.create_all(engine)
    with engine.begin() as conn:
        tracking.register_system(conn, release)
        for name in md.tables:
            rows = _rows_for(name)
            if rows:
                conn.execute(md.tables[name].insert(), rows)
        customers = md.tables["customers"]
        conn.execute(sa.update(customers).where(customers.c.i_customer == 4).values(i_default_site=1))
        conn.execute(sa.update(customers).where(customers.c.i_customer == 5).values(i_default_site=3))
        if engine.dialect.name == "postgresql":
            _reset_sequences(conn, md)
    return engine


def _rows_for(name: str) -> list[dict[str, Any]]:
    if name == "customers":
        return CUSTOMERS
    if name == "accounts":
        return ACCOUNTS
    if name == "xdrs":
        return XDRS
    return ROWS.get(name) or OWNED.get(name) or []


PREREQUISITES = [
    "currencies",
    "payment_systems",
    "templates",
    "taxation_methods",
    "off_peak_periods",
    "routing_plans",
    "routing_categories",
    "routing_criteria",
    "service_policies",
    "internet_access_policies",
    "geo_risk_profiles",
    "cpe_profiles",
    "voice_applications",
    "services",
    "users",
    "notification_templates",
]
ID_SHIFT = 100


def shifted(table: str, rows: list[dict[str, Any]], shift: int = ID_SHIFT) -> list[dict[str, Any]]:
    """The rows with every integer id (primary key and references) moved by ``shift``."""
    md = build_metadata("r1")
    t = md.tables[table]
    id_columns = {
        c.name for c in t.columns if isinstance(c.type, sa.Integer) and (c.primary_key or "ref" in c.info)
    }
    return [
        {k: (v + shift if k in id_columns and isinstance(v, int) else v) for k, v in row.items()}
        for row in rows
    ]


def build_target(
    url: str, release: str = "r2", *, shared: dict[str, list[dict[str, Any]]] | None = None
) -> sa.Engine:
    """A target: the fixture's prerequisites under other ids, plus the given shared rows (ids shifted too)."""
    from bundler.db import connect

    engine = connect(url, create=True)
    md = build_metadata(release)
    md.create_all(engine)
    with engine.begin() as conn:
        tracking.register_system(conn, release)
        for name in PREREQUISITES:
            conn.execute(md.tables[name].insert(), shifted(name, ROWS[name]))
        for name, rows in (shared or {}).items():
            conn.execute(md.tables[name].insert(), shifted(name, rows))
        if engine.dialect.name == "postgresql":
            _reset_sequences(conn, md)
    return engine


def _reset_sequences(conn: sa.Connection, md: sa.MetaData) -> None:
    for table in md.tables.values():
        pk = list(table.primary_key.columns)
        if len(pk) == 1 and isinstance(pk[0].type, sa.Integer) and not pk[0].foreign_keys:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk[0].name}'), "
                f"coalesce((SELECT max({pk[0].name}) FROM {table.name}), 0) + 1, false)"
            )
