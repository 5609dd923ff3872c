"""Sweep summaries: read runs (collect), group and compare them under the research protocol (summary,
with the statistics in stats), and write tables (render) and figures (plots). Arrows point one way:
write -> {render, plots} -> summary -> {labels, collect, stats}."""
from xfer.report.collect import ReportError, collect
from xfer.report.summary import Comparison, Group, Summary, summarize
from xfer.report.write import write_summary

__all__ = ["Comparison", "Group", "ReportError", "Summary", "collect", "summarize", "write_summary"]
