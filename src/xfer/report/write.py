"""Writing a summary to disk: the tables and the figures, into the first folder given."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
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
                  metric: str = DEFAULT_METRIC, out: Path | None = None,
                  shown: Mapping[str, str] | None = None) -> Summary:
    """Summarize the runs under ``folders`` (one folder, or several merged: a sweep and a separate
    baseline sweep) and write summary.md, summary.csv, comparisons.csv and the plots into ``out`` (default:
    the first folder; the sweep-end transferability reports are read from the first folder either way).
    ``shown``: folder paths as summary.md names them (path -> name), where they are not their own name."""
    first = as_folders(folders)[0]
    out = Path(first if out is None else out)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(folders, reference=reference, keep_newest=keep_newest, bootstrap=bootstrap, contrasts=contrasts,
                  alpha=alpha, metric=metric)
    cka = similarity.collect(s)
    # the reports score the first folder's source trunks: check them against that folder's runs alone
    own = s if len(as_folders(folders)) == 1 else summarize(first, keep_newest=keep_newest, bootstrap=0,
                                                          contrasts=None, alpha=alpha, metric=metric)
    page = to_markdown(s, plots=plots) + transfer_check(own, Path(first)) + similarity.markdown(cka, plots)
    for path, name in (shown or {}).items():
        page = page.replace(path, name)
    atomic_write_bytes(out / "summary.md", page.encode())
    atomic_write_bytes(out / "summary.csv", to_csv(s).encode())
    atomic_write_bytes(out / "comparisons.csv", comparisons_csv(s).encode())
    if plots and s.groups:
        write_plots(s, Path(out))
        similarity.plot(cka, Path(out) / "similarity.png")
    return s
