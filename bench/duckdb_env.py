"""The separate environment ``.venv-duckdb`` for the DuckDB baseline (see duckdb_baseline.py).

:func:`ensure` creates it when missing (``python -m venv`` and ``pip install`` of the pinned
packages below, from the package index pip is configured with) and returns its Python, or
the reason it cannot be had. A stamp file records what was installed, so a later run
reuses it at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import ROOT

VENV = ROOT / ".venv-duckdb"
REQUIREMENTS = (
    "duckdb==1.5.5",
    "duckdb-extension-sqlite-scanner==1.5.5",
    "duckdb-extension-postgres-scanner==1.5.5",
    "duckdb-extension-mysql-scanner==1.5.5",
)
STAMP = VENV / ".bench-installed"
TIMEOUT_S = 600

_known: tuple[Path | None, str] | None = None


def _python() -> Path:
    return VENV / "bin" / "python"


def _works(python: Path) -> bool:
    check = (
        "import duckdb, duckdb_extension_sqlite_scanner, duckdb_extension_postgres_scanner,"
        " duckdb_extension_mysql_scanner;"
        "assert duckdb.__version__ == '1.5.5'"
    )
    return subprocess.run([str(python), "-c", check], capture_output=True, timeout=60).returncode == 0


def ensure() -> tuple[Path | None, str]:
    """(the environment's python, "") or (None, why it is unavailable)."""
    global _known
    if _known is not None:
        return _known
    wanted = "\n".join(REQUIREMENTS)
    python = _python()
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted and _works(python):
        _known = (python, "")
        return _known
    print(f"  creating {VENV} ({', '.join(REQUIREMENTS)}) …", flush=True)
    try:
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=TIMEOUT_S
            )
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        _known = (None, f"cannot create {VENV.name}: {exc}")
        return _known
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.splitlines()
        _known = (None, f"pip install into {VENV.name} failed: {' / '.join(errors[-2:])[:300]}")
        return _known
    if not _works(python):
        _known = (None, f"{VENV.name} was installed but cannot import duckdb 1.5.5 and its scanners")
        return _known
    STAMP.write_text(wanted)
    _known = (python, "")
    return _known
