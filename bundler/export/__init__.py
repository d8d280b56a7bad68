"""Export: a root of the source (or a selection of configuration) into a bundle.

The names are loaded on first use, so ``bundler --help`` (which imports the commands)
stays free of SQLAlchemy and Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bundler.export.export import (
        ConfigSelection,
        ExportOptions,
        ExportResult,
        export_config,
        export_many,
        export_root,
    )
    from bundler.marking import restore_export

__all__ = [
    "ConfigSelection",
    "ExportOptions",
    "ExportResult",
    "export_config",
    "export_many",
    "export_root",
    "restore_export",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        module = "bundler.marking" if name == "restore_export" else "bundler.export.export"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
