"""Usage windows: which xDRs travel with a bundle.

The current billing period of a customer comes from its own billing period and its own
time zone (the columns the graph names: ``billing_period.column`` and
``billing_period.time_zone``): a monthly customer in America/New_York has its period
from midnight of the 1st there, which is 04:00 or 05:00 UTC; ``--xdrs since=DATE`` likewise
starts at midnight of DATE in each customer's own zone. Usage times are naive UTC.
A bundle that carries several customers (a reseller with everything under it) gives each
its own window (:class:`OwnerWindow`), and the manifest records each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bundler.errors import BundlerError, UsageError
from bundler.keys import Key
from bundler.manifest import UsageRef

MODES = ("current", "all", "none", "since")


@dataclass(frozen=True)
class OwnerWindow:
    """The window of one row that has a billing period (a customer), in naive UTC: its current
    period, or (mode since) from midnight of the date in its zone, unbounded above."""

    table: str
    pk: Any
    key: Key
    billing_period: str
    time_zone: str | None
    start: datetime
    end: datetime | None

    def to_doc(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "source_pk": self.pk,
            "natural_key": self.key,
            "billing_period": self.billing_period,
            "time_zone": self.time_zone,
            "from": self.start.isoformat(sep=" "),
            "to": self.end.isoformat(sep=" ") if self.end else None,
        }


@dataclass(frozen=True)
class UsageWindow:
    """Usage rows with ``start <= time < end`` (None: unbounded); ``mode`` none carries no usage."""

    mode: str
    start: datetime | None = None
    end: datetime | None = None
    billing_period: str | None = None
    time_zone: str | None = None
    #: mode since: the date, whose midnight each customer's own zone places
    since: date | None = None

    @property
    def carries_usage(self) -> bool:
        return self.mode != "none"

    def manifest(
        self,
        windows: tuple[OwnerWindow, ...] = (),
        warning: str | None = None,
        late_after: dict[str, Any] | None = None,
    ) -> UsageRef:
        return UsageRef(
            self.mode,
            self.start.isoformat(sep=" ") if self.start else None,
            self.end.isoformat(sep=" ") if self.end else None,
            self.billing_period,
            has_period=True,
            windows=tuple(w.to_doc() for w in windows) if windows else None,
            warning=warning,
            late_after=late_after or None,
        )


def parse_xdrs(text: str) -> tuple[str, date | None]:
    """``current``, ``all``, ``none`` or ``since=YYYY-MM-DD``."""
    text = text.strip()
    if text in ("current", "all", "none"):
        return text, None
    if text.startswith("since="):
        try:
            return "since", date.fromisoformat(text[len("since=") :])
        except ValueError:
            pass
    raise UsageError(f"--xdrs {text!r} is not understood", hint="use current, all, none or since=YYYY-MM-DD")


def zone(name: str | None, *, what: str = "") -> Any:
    """The ``ZoneInfo`` of an IANA name (None or empty: UTC); an unknown name is an error naming ``what``."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BundlerError(
            f"{what or 'time zone'}: {name!r} is not an IANA time zone name",
            hint="correct it in the source (e.g. Europe/Berlin, America/New_York, UTC) and export again",
        ) from None


def current_period(period: str, now: datetime, time_zone: str | None = None) -> tuple[datetime, datetime]:
    """The billing period of kind ``period`` that contains ``now`` (naive UTC), as naive UTC
    bounds: the period starts at midnight in ``time_zone`` (None: UTC)."""
    tz = zone(time_zone)
    local = now.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
    day = datetime(local.year, local.month, local.day)
    if period == "daily":
        start, end = day, day + timedelta(days=1)
    elif period == "weekly":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period in ("semimonthly", "monthly"):
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        start, end = first, following
        if period == "semimonthly":
            middle = first.replace(day=16)
            start, end = (first, middle) if day < middle else (middle, following)
    else:
        raise UsageError(f"unknown billing period {period!r}")
    return _utc(start, tz), _utc(end, tz)


def since_start(since: date, time_zone: str | None = None) -> datetime:
    """Midnight of ``since`` in ``time_zone`` (None: UTC), as naive UTC."""
    return _utc(datetime(since.year, since.month, since.day), zone(time_zone))


def owner_bounds(
    window: UsageWindow, period: str, now: datetime, time_zone: str | None
) -> tuple[datetime, datetime | None]:
    """The bounds of one customer's own window: of ``window``'s mode (current or since), in its zone."""
    if window.mode == "since":
        assert window.since is not None
        return since_start(window.since, time_zone), None
    return current_period(period, now, time_zone)


def _utc(local: datetime, tz: Any) -> datetime:
    return local.replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None)


def resolve_window(
    mode: str, since: date | None, period: str | None, now: datetime, time_zone: str | None = None
) -> UsageWindow:
    if mode == "none":
        return UsageWindow("none")
    if mode == "all":
        return UsageWindow("all")
    if mode == "since":
        assert since is not None
        return UsageWindow(
            "since", since_start(since, time_zone), None, time_zone=time_zone or None, since=since
        )
    period = period or "monthly"
    start, end = current_period(period, now, time_zone)
    return UsageWindow("current", start, end, period, time_zone or None)
