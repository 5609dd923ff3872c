"""Sweep summaries: read runs (collect), group and compare them under the research protocol (summary,
with the statistics in stats), and write tables (render) and figures (plots). Arrows point one way:
write -> {render, plots} -> summary -> {labels, collect, stats}; each may read settings (the summary's
settings and their defaults), which imports none of them.

The summary and the writing load on first use, so that reading the settings (``xfer.report.settings``,
what an entry point checks first) does not load scipy and matplotlib."""
from __future__ import annotations

import importlib
from typing import Any

from xfer.errors import ReportError
# bound here, not on first use: importing the submodule xfer.report.collect would make it the package's
# ``collect``, hiding the function
from xfer.report.collect import collect

_WHERE = {"Comparison": "xfer.report.summary", "Group": "xfer.report.summary", "Summary": "xfer.report.summary",
          "summarize": "xfer.report.summary", "write_summary": "xfer.report.write"}
__all__ = sorted([*_WHERE, "ReportError", "collect"])


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
