"""Late usage: carry the usage that reaches the source after a root was migrated, each row once.

:func:`catch_up` runs one pass over every migrated root (``bundler migrate --usage``);
:func:`follow` repeats passes until stopped (``bundler usage sync --every SECONDS``).
"""

from bundler.usage.catchup import CatchUpResult, RootUsage, catch_up, follow

__all__ = ["CatchUpResult", "RootUsage", "catch_up", "follow"]
