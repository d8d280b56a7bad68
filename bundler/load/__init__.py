"""Load: import bundles into the target."""

from bundler.load.load import LoadResult, TablePlan, load_bundle

__all__ = ["LoadResult", "TablePlan", "load_bundle"]
