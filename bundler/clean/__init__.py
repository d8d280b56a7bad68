"""Clean: remove exactly what was transferred, from the target (by its ledger) or the source."""

from bundler.clean.clean import (
    CleanPlan,
    CleanRefused,
    CleanRequest,
    CleanResult,
    KeptRow,
    Selected,
    plan_clean,
    run_clean,
)

__all__ = [
    "CleanPlan",
    "CleanRefused",
    "CleanRequest",
    "CleanResult",
    "KeptRow",
    "Selected",
    "plan_clean",
    "run_clean",
]
