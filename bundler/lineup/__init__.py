"""The lineup: ``bundler migrate``."""

from bundler.lineup.lineup import LineupOptions, LineupResult, RootOutcome, RootSelector, run_lineup

__all__ = ["LineupOptions", "LineupResult", "RootOutcome", "RootSelector", "run_lineup"]
