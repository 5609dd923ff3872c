"""Writing a summary to disk: the tables and the figures, into the first folder given."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xfer.io import atomic_write_bytes
from xfer.report.collect import Folders, as_folders
from xfer.report.plots import write_plots
from xfer.report.render import comparisons_csv, to_csv, to_markdown
from xfer.report.settings import DEFAULT_ALPHA, DEFAULT_CONTRASTS, DEFAULT_METRIC, DEFAULT_REFERENCE
from xfer.report import similarity
from xfer.report.summary import Summary, summarize
from xfer.report.transfer_check import markdown as transfer_check


def write_summary(folders: Folders, plots: bool = True, reference: str = DEFAULT_REFERENCE,
                  keep_newest: bool = False, bootstrap: int = 2000,
                  contrasts: Sequence[str] | str | None = DEFAULT_CONTRASTS, alpha: float = DEFAULT_ALPHA,
                  metric: str = DEFAULT_METRIC) -> Summary:
    """Summarize the runs under ``folders`` (one folder, or several merged: a sweep and a separate
    baseline sweep) and write summary.md, summary.csv, comparisons.csv and the plots into the first."""
    out = as_folders(folders)[0]
    s = summarize(folders, reference=reference, keep_newest=keep_newest, bootstrap=bootstrap, contrasts=contrasts,
                  alpha=alpha, metric=metric)
    cka = similarity.collect(s)
    atomic_write_bytes(out / "summary.md", (to_markdown(s, plots=plots) + transfer_check(s, Path(out))
                                            + similarity.markdown(cka, plots)).encode())
    atomic_write_bytes(out / "summary.csv", to_csv(s).encode())
    atomic_write_bytes(out / "comparisons.csv", comparisons_csv(s).encode())
    if plots and s.groups:
        write_plots(s, Path(out))
        similarity.plot(cka, Path(out) / "similarity.png")
    return s
