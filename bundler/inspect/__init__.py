"""Inspect: audit and validate bundles offline with DuckDB, no database needed.

Library functions (the ``bundler inspect`` commands in :mod:`bundler.inspect.commands`
are thin over them); all take bundle folders and packed ``.bundle.tar.zst`` files alike:

- :func:`summarize` — what bundles hold, with totals;
- :func:`verify_bundle` — every problem of a bundle, as a :class:`VerifyReport`;
- :func:`query` / :func:`query_table` — DuckDB SQL over the bundles' tables as views;
- :func:`diff` — two bundles table by table, matched by natural key.

Importing this package is cheap: duckdb and pyarrow are imported where they are used.
"""

from bundler.inspect.diff import DiffReport, RowChange, TableDiff, diff
from bundler.inspect.query import BundleSet, QueryOutput, expand_bundle_paths, query, query_table
from bundler.inspect.summary import BundleSummary, Summary, TableSummary, summarize
from bundler.inspect.verify import Problem, VerifyReport, verify_bundle, verify_bundles

__all__ = [
    "BundleSet",
    "BundleSummary",
    "DiffReport",
    "Problem",
    "QueryOutput",
    "RowChange",
    "Summary",
    "TableDiff",
    "TableSummary",
    "VerifyReport",
    "diff",
    "expand_bundle_paths",
    "query",
    "query_table",
    "summarize",
    "verify_bundle",
    "verify_bundles",
]
