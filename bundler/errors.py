"""One error base, named exit codes.

Every error the toolkit raises on purpose is a :class:`BundlerError`. Each subclass
carries an exit code and builds a one-line message that names what failed (bundle,
table, row) and says what to do next. The CLI turns them into that line and the code;
``bundler --debug`` shows the traceback instead.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, fixed by the design."""

    OK = 0
    FAILED = 1
    USAGE = 2
    DECISIONS_NEEDED = 3
    BUNDLE_INVALID = 4
    PREREQUISITES_MISSING = 5


class BundlerError(Exception):
    """Base of every error the toolkit reports to its user."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        """The one line shown to the user."""
        return f"{self.message}; {self.hint}" if self.hint else self.message


class UsageError(BundlerError):
    """The command was called with options that do not fit together."""

    exit_code = ExitCode.USAGE


class SpecError(BundlerError):
    """An entity graph, upgrade rule or sidecar does not validate."""

    exit_code = ExitCode.USAGE


class DatabaseError(BundlerError):
    """A database cannot be reached, or does not hold what the command needs."""


class RootError(BundlerError):
    """A root (customer, reseller, vendor) is unknown or in the wrong state."""


class BundleInvalid(BundlerError):
    """A bundle is corrupt, tampered with, of a newer format, or inconsistent."""

    exit_code = ExitCode.BUNDLE_INVALID

    def __init__(self, bundle: str, problems: list[str], *, hint: str | None = None) -> None:
        self.bundle = bundle
        self.problems = list(problems)
        first = self.problems[0] if self.problems else "invalid"
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        super().__init__(f"bundle {bundle}: {first}{more}", hint=hint)


class DecisionsNeeded(BundlerError):
    """Shared rows matched in the target and the sidecar does not say what to do."""

    exit_code = ExitCode.DECISIONS_NEEDED


class PrerequisitesMissing(BundlerError):
    """The target lacks prerequisites the bundle needs."""

    exit_code = ExitCode.PREREQUISITES_MISSING
