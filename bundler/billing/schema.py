"""The reference billing system: a PortaBilling-style schema in two releases.

``r1`` is the old release (the source of a migration) and ``r2`` the new one (the
target). Both are written with SQLAlchemy Core. Every table carries, in ``Table.info``,
what the entity graph needs to know about it (scope, natural key, owner references,
status column, time column, sensitive columns); every reference column carries
``info["ref"]``. :mod:`bundler.billing.graphgen` turns that into
``bundle_spec/graphs/<release>.json``; the engine only ever reads the JSON.

How r2 differs from r1, the way a real new release does:

- renamed column: ``customers.companyname`` is ``customers.company_name``;
- new NOT NULL column with a default: ``accounts.lang`` (default ``'en'``);
- dropped column: ``customers.fax``;
- changed code list: ``hunt_groups.hunt_sequence`` ``Order/Simultaneous/Random`` becomes
  ``sequential/simultaneous/random`` (and gains ``round_robin``);
- a table split in two: the contact columns of ``customers`` move to a new
  ``customer_contacts`` table (one row per customer).

Some references have no foreign-key constraint in the database (xDRs, as in real
billing databases); they are declared in the graph all the same.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

RELEASES = ("r1", "r2")


class ExactNumeric(TypeDecorator[Decimal]):
    """NUMERIC(p, s) that stays exact on SQLite too.

    SQLite has no decimal type: a NUMERIC column turns values into doubles and loses
    digits. There the value is stored as text with exactly ``scale`` digits after the
    point (``'12.50000'``); everywhere else it is the database's own NUMERIC.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision, scale, asdecimal=True)
        self.precision = precision
        self.scale = scale
        self._quantum = Decimal(1).scaleb(-scale)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(self.precision + 2))
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return format(Decimal(value).quantize(self._quantum), "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value) if dialect.name == "sqlite" else value


# Timestamps keep microseconds on every database (MariaDB's DATETIME defaults to seconds).
TIMESTAMP = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MONEY = ExactNumeric(16, 5)
PRICE = ExactNumeric(12, 5)

# Status codes of customers, accounts and vendors (PortaBilling's bill_status).
BILL_STATUS = {"open": "O", "suspended": "S", "closed": "C", "exported": "E"}
STATUS_INFO = {"column": "bill_status", "active": "O", "exported": "E", "terminated": ["C"]}
# i_billing_period codes.
BILLING_PERIODS = {1: "daily", 2: "weekly", 3: "semimonthly", 4: "monthly"}
CUSTOMER_TYPES = {"retail": 1, "reseller": 2, "distributor": 3}
HUNT_SEQUENCES = {
    "r1": ("Order", "Simultaneous", "Random"),
    "r2": ("sequential", "simultaneous", "random", "round_robin"),
}


def _pk(name: str, big: bool = False) -> Column[Any]:
    # SQLite numbers only INTEGER PRIMARY KEY columns by itself
    type_ = BigInteger().with_variant(Integer, "sqlite") if big else Integer()
    return Column(name, type_, primary_key=True, autoincrement=True)


def _ref(
    name: str,
    target: str,
    *,
    nullable: bool = True,
    owner: bool = False,
    constraint: bool = True,
    type_: Any = None,
    use_alter: bool = False,
    primary_key: bool = False,
) -> Column[Any]:
    """A reference column: ``target`` is ``table.column``.

    ``owner`` marks the references that make a row belong to the referenced row (an
    account belongs to its customer; a rate to its tariff). ``constraint=False`` declares
    the reference without a foreign key in the database.
    """
    table = target.split(".")[0]
    args: list[Any] = []
    if constraint:
        args.append(
            ForeignKey(target, use_alter=use_alter, name=f"fk_{name}_{table}"[:60] if use_alter else None)
        )
    return Column(
        name,
        type_ if type_ is not None else Integer,
        *args,
        nullable=nullable,
        index=owner and not primary_key,
        primary_key=primary_key,
        autoincrement=False if primary_key else "auto",
        info={"ref": target, "owner": owner},
    )


def _table(
    md: MetaData,
    name: str,
    scope: str,
    natural_key: list[str],
    *columns: Any,
    time_column: str | None = None,
    sensitive: tuple[str, ...] = (),
    status: dict[str, Any] | None = None,
    billing_period: str | None = None,
    doc: str = "",
    balance: dict[str, Any] | None = None,
    time_zone: str | None = None,
    charge: str | None = None,
    amount: str | None = None,
) -> Table:
    info: dict[str, Any] = {"scope": scope, "natural_key": natural_key, "doc": doc}
    if time_column:
        info["time_column"] = time_column
    if charge:
        info["charge"] = charge
    if sensitive:
        info["sensitive"] = list(sensitive)
    if status:
        info["status"] = status
    if balance:
        info["balance"] = balance
    if amount:
        info["amount"] = amount
    if billing_period:
        info["billing_period"] = {
            "column": billing_period,
            "codes": {str(k): v for k, v in BILLING_PERIODS.items()},
        }
        if time_zone:
            info["billing_period"]["time_zone"] = time_zone
    return Table(name, md, *columns, info=info)


def _named(md: MetaData, name: str, pk: str, scope: str, *extra: Any, doc: str = "", size: int = 64) -> Table:
    """A table identified across systems by a unique ``name``."""
    return _table(
        md,
        name,
        scope,
        ["name"],
        _pk(pk),
        Column("name", String(size), nullable=False, unique=True),
        *extra,
        doc=doc,
    )


def _prerequisites(md: MetaData) -> None:
    p = "prerequisite"
    _table(
        md,
        "currencies",
        p,
        ["iso_4217"],
        Column("iso_4217", String(3), primary_key=True),
        Column("name", String(64), nullable=False),
        Column("decimal_digits", Integer, nullable=False, server_default="2"),
        doc="Currencies, keyed by their ISO 4217 code.",
    )
    _named(md, "payment_systems", "i_payment_system", p, Column("processor", String(32)))
    _table(
        md,
        "templates",
        p,
        ["type", "name"],
        _pk("i_template"),
        Column("type", String(16), nullable=False),  # invoice | tariff_upload
        Column("name", String(64), nullable=False),
        Column("body", Text),
        UniqueConstraint("type", "name"),
        doc="Invoice and tariff-upload templates.",
    )
    _named(md, "taxation_methods", "i_taxation_method", p, Column("plugin", String(32)))
    _named(md, "off_peak_periods", "i_off_peak_period", p, Column("definition", String(128)))
    _named(md, "routing_plans", "i_routing_plan", p, Column("description", String(128)))
    _named(md, "routing_categories", "i_routing_category", p)
    _named(md, "routing_criteria", "i_routing_criteria", p, Column("expression", String(128)))
    _named(md, "service_policies", "i_service_policy", p, Column("attributes", Text))
    _named(md, "internet_access_policies", "i_access_policy", p, Column("bandwidth_kbps", Integer))
    _named(md, "geo_risk_profiles", "i_geo_risk_profile", p, Column("risk_level", Integer))
    _named(md, "cpe_profiles", "i_cpe_profile", p, Column("vendor_model", String(64)))
    _named(md, "voice_applications", "i_voice_app", p, Column("app_type", String(32)))
    _named(md, "services", "i_service", p, Column("unit", String(16), nullable=False))
    _table(
        md,
        "users",
        p,
        ["login"],
        _pk("i_user"),
        Column("login", String(64), nullable=False, unique=True),
        Column("role", String(16), nullable=False),  # root | staff
        Column("name", String(128)),
        doc="Users of the billing system: the root user and the staff who manage customers.",
    )
    _named(
        md,
        "notification_templates",
        "i_notification_template",
        p,
        Column("event", String(32), nullable=False),
        Column("body", Text),
        doc="Notifications sent to account holders (low balance, expiry, ...).",
    )


def _configuration(md: MetaData) -> None:
    s = "shared"
    _named(
        md,
        "access_levels",
        "i_acl",
        s,
        Column("type", String(16), nullable=False),
        Column("description", String(255)),
    )
    _named(
        md,
        "customer_classes",
        "i_customer_class",
        s,
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        _ref("i_invoice_template", "templates.i_template", nullable=False),
        Column("grace_period", Integer, nullable=False, server_default="0"),
    )
    _named(md, "product_groups", "i_product_group", s)
    _named(
        md,
        "tariffs",
        "i_tariff",
        s,
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        _ref("i_off_peak_period", "off_peak_periods.i_off_peak_period"),
        _ref("i_upload_template", "templates.i_template"),
        Column("description", String(255)),
        Column("created", TIMESTAMP, nullable=False),
    )
    _named(
        md,
        "products",
        "i_product",
        s,
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        _ref("i_product_group", "product_groups.i_product_group"),
        _ref("i_routing_plan", "routing_plans.i_routing_plan"),
        Column("maintenance_fee", PRICE, nullable=False, server_default="0"),
        Column("description", String(255)),
    )
    _table(
        md,
        "product_rating_entries",
        s,
        ["i_product", "i_service", "access_code"],
        _pk("i_accessibility"),
        _ref("i_product", "products.i_product", nullable=False, owner=True),
        _ref("i_tariff", "tariffs.i_tariff", nullable=False),
        _ref("i_service", "services.i_service", nullable=False),
        Column("access_code", String(32), nullable=False),
        UniqueConstraint("i_product", "i_service", "access_code"),
        doc="A product's rating entries: which tariff rates which service.",
    )
    _table(
        md,
        "destinations",
        s,
        ["destination"],
        _pk("i_dest"),
        Column("destination", String(32), nullable=False, unique=True),
        Column("country", String(64)),
        Column("description", String(128)),
    )
    _table(
        md,
        "rates",
        s,
        ["i_tariff", "i_dest", "effective_from"],
        _pk("i_rate"),
        _ref("i_tariff", "tariffs.i_tariff", nullable=False, owner=True),
        _ref("i_dest", "destinations.i_dest", nullable=False),
        Column("price_1", PRICE, nullable=False),
        Column("price_n", PRICE, nullable=False),
        Column("interval_1", Integer, nullable=False),
        Column("interval_n", Integer, nullable=False),
        Column("effective_from", TIMESTAMP, nullable=False),
        UniqueConstraint("i_tariff", "i_dest", "effective_from"),
    )
    _named(md, "destination_group_sets", "i_dest_group_set", s)
    _table(
        md,
        "destination_groups",
        s,
        ["i_dest_group_set", "name"],
        _pk("i_dest_group"),
        _ref("i_dest_group_set", "destination_group_sets.i_dest_group_set", nullable=False, owner=True),
        Column("name", String(64), nullable=False),
        UniqueConstraint("i_dest_group_set", "name"),
    )
    _table(
        md,
        "destination_group_members",
        s,
        ["i_dest_group", "i_dest"],
        _ref("i_dest_group", "destination_groups.i_dest_group", nullable=False, owner=True, primary_key=True),
        _ref("i_dest", "destinations.i_dest", nullable=False, primary_key=True),
        doc="Link table: which destinations a destination group holds.",
    )
    _named(
        md,
        "spending_plans",
        "i_spending_plan",
        s,
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        Column("spending_limit", MONEY, nullable=False),
    )
    _named(
        md,
        "subscriptions",
        "i_subscription",
        s,
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        Column("activation_fee", PRICE, nullable=False, server_default="0"),
        Column("description", String(255)),
    )
    _table(
        md,
        "subscription_fees",
        s,
        ["i_subscription", "periods"],
        _pk("i_subscription_fee"),
        _ref("i_subscription", "subscriptions.i_subscription", nullable=False, owner=True),
        Column("periods", Integer, nullable=False),
        Column("fee", PRICE, nullable=False),
        UniqueConstraint("i_subscription", "periods"),
    )
    _named(
        md,
        "volume_discount_plans",
        "i_vd_plan",
        s,
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        Column("description", String(255)),
    )
    _named(md, "dialing_rules", "i_dialing_rule", s, Column("rule", String(255), nullable=False))
    _named(
        md,
        "fraud_traffic_profiles",
        "i_ftp",
        s,
        _ref("i_geo_risk_profile", "geo_risk_profiles.i_geo_risk_profile", nullable=False),
        Column("max_calls_per_hour", Integer, nullable=False),
    )
    _named(md, "custom_report_definitions", "i_custom_report", s, Column("definition", Text, nullable=False))
    _named(md, "custom_field_names", "i_custom_field", s, Column("type", String(16), nullable=False))
    _named(
        md,
        "did_pricing_batches",
        "i_did_pricing_batch",
        s,
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        Column("activation_fee", PRICE, nullable=False),
        Column("monthly_fee", PRICE, nullable=False),
    )
    _named(
        md,
        "did_groups",
        "i_did_group",
        s,
        _ref("i_did_pricing_batch", "did_pricing_batches.i_did_pricing_batch"),
    )
    _named(
        md,
        "nodes",
        "i_node",
        s,
        Column("node_type", String(32), nullable=False),
        Column("ip_address", String(45), nullable=False),
    )


def _vendors(md: MetaData) -> None:
    o = "owned"
    _table(
        md,
        "vendors",
        o,
        ["name"],
        _pk("i_vendor"),
        Column("name", String(64), nullable=False, unique=True),
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        Column("i_billing_period", Integer, nullable=False, server_default="4"),
        Column("bill_status", String(1), nullable=False, server_default="O"),
        Column("balance", MONEY, nullable=False, server_default="0"),
        Column("creation_date", TIMESTAMP, nullable=False),
        # bilateral traffic exchange: the customer the vendor also is, pre-configured on the target
        _ref("i_customer", "customers.i_customer", constraint=False),
        status=STATUS_INFO,
        billing_period="i_billing_period",
        doc="Carriers the operator buys termination and DIDs from.",
    )
    _table(
        md,
        "vendor_tariffs",
        o,
        ["name"],
        _pk("i_vendor_tariff"),
        _ref("i_vendor", "vendors.i_vendor", nullable=False, owner=True),
        Column("name", String(64), nullable=False, unique=True),
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
    )
    _table(
        md,
        "vendor_rates",
        o,
        ["i_vendor_tariff", "i_dest", "effective_from"],
        _pk("i_vendor_rate"),
        _ref("i_vendor_tariff", "vendor_tariffs.i_vendor_tariff", nullable=False, owner=True),
        _ref("i_dest", "destinations.i_dest", nullable=False),
        Column("price", PRICE, nullable=False),
        Column("effective_from", TIMESTAMP, nullable=False),
        UniqueConstraint("i_vendor_tariff", "i_dest", "effective_from"),
    )
    _table(
        md,
        "connections",
        o,
        ["name"],
        _pk("i_connection"),
        _ref("i_vendor", "vendors.i_vendor", nullable=False, owner=True),
        Column("name", String(64), nullable=False, unique=True),
        _ref("i_vendor_tariff", "vendor_tariffs.i_vendor_tariff", nullable=False),
        _ref("i_node", "nodes.i_node"),
        _ref("i_routing_category", "routing_categories.i_routing_category"),
        _ref("i_routing_criteria", "routing_criteria.i_routing_criteria"),
        Column("remote_ip", String(45)),
    )
    _table(
        md,
        "vendor_did_batches",
        o,
        ["name"],
        _pk("i_vendor_batch"),
        _ref("i_vendor", "vendors.i_vendor", nullable=False, owner=True),
        Column("name", String(64), nullable=False, unique=True),
        _ref("i_did_group", "did_groups.i_did_group"),
    )
    _table(
        md,
        "did_numbers",
        o,
        ["number"],
        _pk("i_did_number"),
        _ref("i_vendor_batch", "vendor_did_batches.i_vendor_batch", nullable=False, owner=True),
        Column("number", String(32), nullable=False, unique=True),
        _ref("i_did_pricing_batch", "did_pricing_batches.i_did_pricing_batch"),
        Column("description", String(128)),
    )
    _table(
        md,
        "vendor_xdrs",
        "usage",
        ["call_id"],
        _pk("i_vendor_xdr", big=True),
        _ref("i_connection", "connections.i_connection", nullable=False, owner=True, constraint=False),
        Column("call_id", String(64), nullable=False, unique=True),
        Column("connect_time", TIMESTAMP, nullable=False),
        Column("bill_time", TIMESTAMP, nullable=False, index=True),
        Column("duration", Integer, nullable=False),
        Column("charged_amount", MONEY, nullable=False),
        time_column="bill_time",
        doc="What each vendor charged for a call.",
        amount="charged_amount",
    )


def _customers(md: MetaData, release: str) -> None:
    o = "owned"
    contact = [
        Column("firstname", String(64)),
        Column("lastname", String(64)),
        Column("email", String(128)),
        Column("phone", String(32)),
        Column("address", String(255)),
    ]
    r1_only = (
        [Column("companyname", String(128)), Column("fax", String(32)), *contact]
        if release == "r1"
        else [Column("company_name", String(128))]
    )
    _table(
        md,
        "customers",
        o,
        ["name"],
        _pk("i_customer"),
        Column("name", String(64), nullable=False, unique=True),
        Column("i_customer_type", Integer, nullable=False),
        _ref("i_parent", "customers.i_customer", owner=True),
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        _ref("i_customer_class", "customer_classes.i_customer_class"),
        _ref("i_acl", "access_levels.i_acl"),
        _ref("i_taxation_method", "taxation_methods.i_taxation_method", nullable=False),
        _ref("i_dialing_rule", "dialing_rules.i_dialing_rule"),
        _ref("i_ftp", "fraud_traffic_profiles.i_ftp"),
        _ref("i_custom_report", "custom_report_definitions.i_custom_report"),
        _ref("i_manager", "users.i_user"),  # the staff member (or the root user) who manages it
        _ref("i_default_site", "customer_sites.i_customer_site", use_alter=True),
        Column("i_billing_period", Integer, nullable=False),
        Column("bill_status", String(1), nullable=False, server_default="O"),
        Column("balance", MONEY, nullable=False, server_default="0"),
        Column("credit_limit", MONEY),
        Column("creation_date", TIMESTAMP, nullable=False),
        *r1_only,
        Column("notes", Text),
        Column("time_zone", String(64)),  # IANA name; its billing periods start at midnight there
        CheckConstraint("i_customer_type IN (1, 2, 3)", name="ck_customer_type"),
        status=STATUS_INFO,
        billing_period="i_billing_period",
        time_zone="time_zone",
        balance={"column": "balance", "usage": "add"},
        doc="Retail customers, resellers (with sub-customers through i_parent) and distributors.",
    )
    if release == "r2":
        _table(
            md,
            "customer_contacts",
            o,
            ["i_customer"],
            _pk("i_customer_contact"),
            _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
            *contact,
            UniqueConstraint("i_customer"),
            doc="r2: the contact details that r1 kept on customers.",
        )
    r2_only = [Column("lang", String(8), nullable=False, server_default="en")] if release == "r2" else []
    _table(
        md,
        "accounts",
        o,
        ["id"],
        _pk("i_account"),
        Column("id", String(64), nullable=False, unique=True),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_product", "products.i_product", nullable=False),
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        Column("billing_model", Integer, nullable=False),  # -1 debit, 1 credit
        Column("bill_status", String(1), nullable=False, server_default="O"),
        Column("balance", MONEY, nullable=False, server_default="0"),
        Column("credit_limit", MONEY),
        Column("opening_balance", MONEY, nullable=False, server_default="0"),
        Column("activation_date", Date, nullable=False),
        Column("expiration_date", Date),
        _ref("i_routing_plan", "routing_plans.i_routing_plan"),
        _ref("i_service_policy", "service_policies.i_service_policy"),
        _ref("i_access_policy", "internet_access_policies.i_access_policy"),
        _ref("i_vd_plan", "volume_discount_plans.i_vd_plan"),
        _ref("i_spending_plan", "spending_plans.i_spending_plan"),
        _ref("i_notification_template", "notification_templates.i_notification_template"),
        Column("h323_password", String(64)),
        Column("blocked", String(1), nullable=False, server_default="N"),
        *r2_only,
        status=STATUS_INFO,
        sensitive=("h323_password",),
        # debit accounts keep their own; a charge takes from their funds
        balance={"column": "balance", "where": {"billing_model": [-1]}, "usage": "subtract"},
        doc="Accounts (phone lines, SIP endpoints) of a customer.",
    )
    _table(
        md,
        "customer_sites",
        o,
        ["i_customer", "name"],
        _pk("i_customer_site"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        Column("name", String(64), nullable=False),
        Column("address", String(255)),
        UniqueConstraint("i_customer", "name"),
        doc="A customer's sites; customers.i_default_site points back (a reference cycle).",
    )
    _table(
        md,
        "customer_service_features",
        o,
        ["i_customer", "feature_name"],
        _pk("i_cust_feature"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        Column("feature_name", String(64), nullable=False),
        Column("flag_value", String(1), nullable=False),
        Column("attributes", String(255)),
        UniqueConstraint("i_customer", "feature_name"),
    )
    _table(
        md,
        "account_service_features",
        o,
        ["i_account", "feature_name"],
        _pk("i_acc_feature"),
        _ref("i_account", "accounts.i_account", nullable=False, owner=True),
        Column("feature_name", String(64), nullable=False),
        Column("flag_value", String(1), nullable=False),
        Column("attributes", String(255)),
        UniqueConstraint("i_account", "feature_name"),
    )
    _table(
        md,
        "invoices",
        o,
        ["invoice_number"],
        _pk("i_invoice"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        Column("invoice_number", String(32), nullable=False, unique=True),
        _ref("i_template", "templates.i_template"),
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        Column("period_from", Date, nullable=False),
        Column("period_to", Date, nullable=False),
        Column("issue_date", TIMESTAMP, nullable=False),
        Column("amount_net", MONEY, nullable=False),
        Column("amount_due", MONEY, nullable=False),
        Column("amount_paid", MONEY, nullable=False, server_default="0"),
        amount="amount_due",
    )
    _table(
        md,
        "payment_methods",
        o,
        ["token"],
        _pk("i_payment_method"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_payment_system", "payment_systems.i_payment_system", nullable=False),
        Column("payment_method", String(16), nullable=False),
        Column("token", String(64), nullable=False, unique=True),
        Column("number", String(32)),
        Column("exp_date", Date),
        Column("name_on_card", String(128)),
        sensitive=("number", "name_on_card"),
    )
    _table(
        md,
        "payments",
        o,
        ["transaction_id"],
        _pk("i_payment"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_payment_method", "payment_methods.i_payment_method"),
        _ref("iso_4217", "currencies.iso_4217", nullable=False, type_=String(3)),
        Column("amount", MONEY, nullable=False),
        Column("payment_time", TIMESTAMP, nullable=False),
        Column("transaction_id", String(64), nullable=False, unique=True),
        Column("notes", String(255)),
        amount="amount",
    )
    _table(
        md,
        "credit_limit_history",
        o,
        ["i_customer", "changed_at"],
        _pk("i_cl_history"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        Column("credit_limit", MONEY),
        Column("changed_at", TIMESTAMP, nullable=False),
        UniqueConstraint("i_customer", "changed_at"),
    )
    _table(
        md,
        "extensions",
        o,
        ["i_customer", "extension_number"],
        _pk("i_extension"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_account", "accounts.i_account"),
        Column("extension_number", String(16), nullable=False),
        Column("name", String(64), nullable=False),
        UniqueConstraint("i_customer", "extension_number"),
        doc="Cloud PBX extensions.",
    )
    _table(
        md,
        "hunt_groups",
        o,
        ["i_customer", "name"],
        _pk("i_hunt_group"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        Column("name", String(64), nullable=False),
        Column("hunt_group_number", String(16), nullable=False),
        Column("hunt_sequence", String(16), nullable=False),
        UniqueConstraint("i_customer", "name"),
    )
    _table(
        md,
        "hunt_group_members",
        o,
        ["i_hunt_group", "i_extension"],
        _ref("i_hunt_group", "hunt_groups.i_hunt_group", nullable=False, owner=True, primary_key=True),
        _ref("i_extension", "extensions.i_extension", nullable=False, primary_key=True),
        Column("position", Integer, nullable=False),
        doc="Link table: extensions in a hunt group, in order.",
    )
    _table(
        md,
        "call_queues",
        o,
        ["i_customer", "name"],
        _pk("i_call_queue"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_hunt_group", "hunt_groups.i_hunt_group"),
        _ref("i_voice_app", "voice_applications.i_voice_app"),
        Column("name", String(64), nullable=False),
        Column("max_waiting", Integer, nullable=False),
        UniqueConstraint("i_customer", "name"),
    )
    _table(
        md,
        "sim_cards",
        o,
        ["icc_id"],
        _pk("i_sim_card"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_account", "accounts.i_account"),
        Column("icc_id", String(22), nullable=False, unique=True),
        Column("imsi", String(15), nullable=False),
        Column("pin", String(8)),
        Column("status", String(16), nullable=False),
        sensitive=("pin",),
        doc="SIM card inventory assigned to a customer.",
    )
    _table(
        md,
        "cpe_inventory",
        o,
        ["mac"],
        _pk("i_cpe"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_account", "accounts.i_account"),
        _ref("i_cpe_profile", "cpe_profiles.i_cpe_profile", nullable=False),
        Column("mac", String(17), nullable=False, unique=True),
        Column("serial", String(32), nullable=False),
        doc="CPE (IP phones, routers) assigned to a customer.",
    )
    _table(
        md,
        "did_assignments",
        o,
        ["i_did_number", "assigned_from"],
        _pk("i_did_assignment"),
        _ref("i_account", "accounts.i_account", nullable=False, owner=True),
        _ref("i_did_number", "did_numbers.i_did_number", nullable=False),
        Column("assigned_from", TIMESTAMP, nullable=False),
        UniqueConstraint("i_did_number", "assigned_from"),
    )
    _table(
        md,
        "account_subscriptions",
        o,
        ["i_account", "i_subscription", "start_date"],
        _pk("i_account_subscription"),
        _ref("i_account", "accounts.i_account", nullable=False, owner=True),
        _ref("i_subscription", "subscriptions.i_subscription", nullable=False),
        Column("start_date", Date, nullable=False),
        Column("finish_date", Date),
        Column("discount_rate", ExactNumeric(5, 2)),
        UniqueConstraint("i_account", "i_subscription", "start_date"),
    )
    _table(
        md,
        "volume_discount_counters",
        o,
        ["i_customer", "i_vd_plan", "i_dest_group", "period_start"],
        _pk("i_vd_counter"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_vd_plan", "volume_discount_plans.i_vd_plan", nullable=False),
        _ref("i_dest_group", "destination_groups.i_dest_group", nullable=False),
        Column("period_start", Date, nullable=False),
        Column("peak_level", Integer, nullable=False),
        Column("used", MONEY, nullable=False),
        UniqueConstraint("i_customer", "i_vd_plan", "i_dest_group", "period_start"),
    )
    _table(
        md,
        "custom_field_values",
        o,
        ["i_customer", "i_custom_field"],
        _pk("i_cf_value"),
        _ref("i_customer", "customers.i_customer", nullable=False, owner=True),
        _ref("i_custom_field", "custom_field_names.i_custom_field", nullable=False),
        Column("value", String(255)),
        UniqueConstraint("i_customer", "i_custom_field"),
    )
    _table(
        md,
        "xdrs",
        "usage",
        ["call_id"],
        _pk("i_xdr", big=True),
        _ref("i_account", "accounts.i_account", nullable=False, owner=True, constraint=False),
        _ref("i_service", "services.i_service", nullable=False, constraint=False),
        _ref("i_dest", "destinations.i_dest", constraint=False),
        _ref("i_invoice", "invoices.i_invoice", constraint=False),
        Column("call_id", String(64), nullable=False, unique=True),
        Column("cli", String(32)),
        Column("cld", String(32)),
        Column("connect_time", TIMESTAMP, nullable=False),
        Column("disconnect_time", TIMESTAMP, nullable=False),
        Column("bill_time", TIMESTAMP, nullable=False, index=True),
        Column("charged_amount", MONEY, nullable=False),
        Column("charged_quantity", Integer, nullable=False),
        Column("used_quantity", Integer, nullable=False),
        Column("account_balance", MONEY, nullable=False),
        Column("country", String(64)),
        Column("description", String(128)),
        time_column="bill_time",
        charge="charged_amount",
        doc="Account usage records (calls, data sessions, messages).",
        amount="charged_amount",
    )
    _table(
        md,
        "call_recordings",
        "mirror",
        ["call_id"],
        _pk("i_call_recording", big=True),
        Column("call_id", String(64), nullable=False, unique=True),
        Column("account_id", String(64), nullable=False),
        Column("recorded_at", TIMESTAMP, nullable=False, index=True),
        Column("duration", Integer, nullable=False),
        Column("file_name", String(255), nullable=False),
        Column("file_size", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        time_column="recorded_at",
        doc="Call recording metadata; files live in a recordings store. Mirrored by recordings sync.",
    )


#: Per shared table, the columns whose difference changes money: a match that differs in one
#: is reused only by a per-key decision (see the graph's ``binding``).
BINDING = {
    "customer_classes": ["iso_4217"],
    "tariffs": ["iso_4217"],
    "products": ["iso_4217", "maintenance_fee"],
    "product_rating_entries": ["i_tariff"],
    "rates": ["price_1", "price_n", "interval_1", "interval_n"],
    "spending_plans": ["iso_4217", "spending_limit"],
    "subscriptions": ["iso_4217", "activation_fee"],
    "subscription_fees": ["fee"],
    "volume_discount_plans": ["iso_4217"],
    "did_pricing_batches": ["iso_4217", "activation_fee", "monthly_fee"],
}


def build_metadata(release: str) -> MetaData:
    """The schema of one release of the reference billing system."""
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; known: {', '.join(RELEASES)}")
    md = MetaData(info={"release": release})
    _prerequisites(md)
    _configuration(md)
    _vendors(md)
    _customers(md, release)
    for name, columns in BINDING.items():
        md.tables[name].info["binding"] = columns
    return md
