"""Usage windows: which xDRs travel with a bundle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from bundler.errors import UsageError
from bundler.manifest import UsageRef

MODES = ("current", "all", "none", "since")


@dataclass(frozen=True)
class UsageWindow:
    """Usage rows with ``start <= time < end`` (None: unbounded); ``mode`` none carries no usage."""

    mode: str
    start: datetime | None = None
    end: datetime | None = None
    billing_period: str | None = None

    @property
    def carries_usage(self) -> bool:
        return self.mode != "none"

    def manifest(self) -> UsageRef:
        return UsageRef(
            self.mode,
            self.start.isoformat(sep=" ") if self.start else None,
            self.end.isoformat(sep=" ") if self.end else None,
            self.billing_period,
            has_period=True,
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


def current_period(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The billing period of kind ``period`` that contains ``now``."""
    day = datetime(now.year, now.month, now.day)
    if period == "daily":
        return day, day + timedelta(days=1)
    if period == "weekly":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    if period == "semimonthly":
        middle = first.replace(day=16)
        return (first, middle) if day < middle else (middle, following)
    if period == "monthly":
        return first, following
    raise UsageError(f"unknown billing period {period!r}")


def resolve_window(mode: str, since: date | None, period: str | None, now: datetime) -> UsageWindow:
    if mode == "none":
        return UsageWindow("none")
    if mode == "all":
        return UsageWindow("all")
    if mode == "since":
        assert since is not None
        return UsageWindow("since", datetime(since.year, since.month, since.day), None)
    period = period or "monthly"
    start, end = current_period(period, now)
    return UsageWindow("current", start, end, period)
