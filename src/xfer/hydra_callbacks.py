"""Hydra callbacks: write the sweep summary when a multirun ends."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SummarizeSweep(Callback):
    """Writes summary.md, summary.csv, comparisons.csv and the plots into the sweep folder, and prints the
    winner on validation per data size and every comparison that survives Holm's correction."""

    def __init__(self, reference: str = "scratch", contrasts: Any = ("linear_probe:frozen_random",)) -> None:
        self.reference = reference
        from xfer.report.summary import DEFAULT_CONTRASTS

        given = tuple(str(c) for c in contrasts) if contrasts else ()
        self.contrasts = DEFAULT_CONTRASTS if given == DEFAULT_CONTRASTS else given

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from xfer.report import ReportError, write_summary

        folder = Path(config.hydra.sweep.dir)
        rerun = f"python scripts/summarize.py {folder}" + (f" --reference {self.reference}"
                                                            if self.reference != "scratch" else "")
        try:
            s = write_summary(folder, reference=self.reference, contrasts=self.contrasts)
        except ReportError as err:  # the sweep's runs are fine; only the summary needs a decision
            log.error("no sweep summary: %s (then rerun: %s)", err, rerun)
            return
        except Exception as err:  # noqa: BLE001 - a failed summary must not hide the sweep's results
            log.error("could not write the sweep summary in %s: %s: %s (rerun: %s)", folder, type(err).__name__,
                      err, rerun)
            return
        print(f"\nsweep summary: {folder / 'summary.md'}  ({len(s.runs)} ok, {len(s.failed)} failed)")
        for size, w in s.winners.items():
            if w.group is None:
                print(f"  data={size}: no winner ({w.note})")
            else:
                print(f"  data={size}: winner on validation {w.group.strategy} (val {100 * w.group.val_mean:.1f}%, "
                      f"test {100 * w.group.mean:.1f}%, n={w.group.n})")
        for c in s.comparisons:
            if c.significant:
                print(f"  significant (Holm, m={s.m}): {c.group.strategy} vs {c.reference.strategy} at data={c.data}: "
                      f"{100 * c.diff.mean:+.2f} points, Holm p={c.p_holm:.3g}, n={c.n}")
        if s.comparisons and not any(c.significant for c in s.comparisons):
            print(f"  no difference from {self.reference} is significant after Holm's correction (m={s.m})")
