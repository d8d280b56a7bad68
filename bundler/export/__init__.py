"""Export: a root of the source (or a selection of configuration) into a bundle."""

from bundler.export.export import (
    ConfigSelection,
    ExportOptions,
    ExportResult,
    export_config,
    export_many,
    export_root,
    restore_export,
)

__all__ = [
    "ConfigSelection",
    "ExportOptions",
    "ExportResult",
    "export_config",
    "export_many",
    "export_root",
    "restore_export",
]
