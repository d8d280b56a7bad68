"""A record of a run: a log while it runs, then a self-contained HTML report and its data.

:class:`RunRecorder` wraps the run's :class:`~bundler.progress.Progress`: it passes every
call on, keeps when each task started and finished (a root's export and load are tasks
named after its bundle), and writes a timestamped log line for each start, finish and
note. :func:`report_data` turns a lineup's summary and those times into the report's data
(downtime per root with its timeline, rows and bytes per table, throughput over time,
failures grouped by cause, reused rows that differ); :func:`write_report` writes it as
JSON and as one HTML file whose charts (plotly, its JavaScript inline) need no network.
"""

from __future__ import annotations

from bundler.report.data import cause_of, failure_groups, report_data
from bundler.report.recorder import RunRecorder
from bundler.report.render import write_report

__all__ = ["RunRecorder", "cause_of", "failure_groups", "report_data", "write_report"]
