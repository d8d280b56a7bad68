"""Entry point of ``make bench`` (placeholder until the benchmarks are written)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Run the benchmarks named in ``argv`` (none exist yet)."""
    print("no benchmarks yet")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
