"""Retrop: carry a customer's usage and balances back from the target to the source."""

from bundler.reverse.reverse import (
    LIMITS,
    ReverseExportResult,
    ReverseLoadResult,
    reverse_export,
    reverse_load,
)

__all__ = ["LIMITS", "ReverseExportResult", "ReverseLoadResult", "reverse_export", "reverse_load"]
