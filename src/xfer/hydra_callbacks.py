"""Hydra callbacks: write the sweep summary when a multirun ends."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from xfer.errors import ConfigError, InputError, ReportError
from xfer.report.settings import (DEFAULT_ALPHA, DEFAULT_CONTRASTS, DEFAULT_METRIC, DEFAULT_REFERENCE, check_alpha,
                                  check_metric)

log = logging.getLogger(__name__)
_NODE = "hydra.callbacks.summarize"

# What the last multirun of this process left, for train.py's exit code: (sweep folder, failed job folders,
# jobs with a results.json). Set by SummarizeSweep at the end of every sweep, summary or not.
last_sweep: tuple[Path, list[str], int] | None = None


def sweep_jobs(overrides: Any) -> int:
    """How many jobs a multirun's command-line overrides make (the product of the sweeps' lengths); 1 where
    Hydra's parser cannot expand one (a sweeper's own search space)."""
    import math

    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
        return math.prod(len(list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override())
    except Exception:  # noqa: BLE001 - an estimate only: glob() over a config group and the like
        return 1


def failed_jobs(folder: Path) -> tuple[list[str], int]:
    """The job folders under a sweep whose results.json says ``failed``, and how many jobs have one."""
    import json

    failed, seen = [], 0
    for path in sorted(Path(folder).glob("*/results.json")):
        try:
            status = json.loads(path.read_text()).get("status")
        except (OSError, ValueError):
            status = "failed"  # unreadable: not a finished job
        seen += 1
        if status != "ok":
            failed.append(path.parent.name)
    return failed, seen


class SummarizeSweep(Callback):
    """Writes summary.md, summary.csv, comparisons.csv and the plots into the sweep folder, and prints the
    winner on validation per data size and every comparison that survives Holm's correction.

    The settings come from ``hydra.callbacks.summarize`` (conf/hydra/default.yaml), which states their
    values; the defaults here are the summary's own (``xfer.report.settings``), for a callback built in Python. A
    setting that is not allowed (``alpha`` outside (0, 1), an unknown ``metric``) stops the run before any
    job starts, with one line."""

    def __init__(self, reference: str = DEFAULT_REFERENCE, contrasts: Any = DEFAULT_CONTRASTS,
                 alpha: float = DEFAULT_ALPHA, metric: str = DEFAULT_METRIC, transfer_scores: bool = False) -> None:
        self.reference = reference
        self.transfer_scores = bool(transfer_scores)
        given = tuple(str(c) for c in contrasts) if contrasts else ()
        self.contrasts = DEFAULT_CONTRASTS if given == DEFAULT_CONTRASTS else given
        try:
            self.alpha = check_alpha(alpha, f"{_NODE}.alpha")
            self.metric = check_metric(metric, f"{_NODE}.metric")
        except ReportError as err:  # a setting of the config: the user fixes it before the sweep starts
            raise ConfigError(str(err)) from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before any job: a sweep whose writes, estimated from the experiment's newest finished run, do not
        fit on the disk stops with one line (xfer.machine.check_sweep_disk)."""
        from xfer.machine import check_sweep_disk

        folder = Path(str(config.hydra.sweep.dir))
        failed, seen = failed_jobs(folder)  # a resumed sweep: its finished jobs write nothing more
        try:
            check_sweep_disk(folder, Path(str(config.paths.log_dir)) / str(config.name),
                             sweep_jobs(config.hydra.overrides.task) - (seen - len(failed)))
        except InputError as err:  # Hydra turns a callback's exception into a warning: exit here, in one line
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from xfer.report import write_summary

        global last_sweep
        folder = Path(config.hydra.sweep.dir)
        last_sweep = (folder, *failed_jobs(folder))
        rerun = f"python scripts/summarize.py {folder}" + "".join(
            f" {flag} {value}" for flag, value, default in (("--reference", self.reference, DEFAULT_REFERENCE),
                                                            ("--alpha", self.alpha, DEFAULT_ALPHA),
                                                            ("--metric", self.metric, DEFAULT_METRIC))
            if value != default)
        if self.transfer_scores:
            self.score_source_trunks(folder)
        try:
            s = write_summary(folder, reference=self.reference, contrasts=self.contrasts, alpha=self.alpha,
                              metric=self.metric)
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
        from xfer.report.render import negative_transfer

        for line in negative_transfer(s):
            print(f"  {line}")
        if s.comparisons and not any(c.significant for c in s.comparisons):
            print(f"  no difference from {self.reference} is significant after Holm's correction (m={s.m})")

    @staticmethod
    def score_source_trunks(folder: Path) -> None:
        """Each seed's source trunk scored per depth (analyze.py transfer multirun=), for the summary to rank
        against what the sweep measured; a failure here is logged, and the summary is written without it."""
        from xfer.analysis.cli import sweep_runs, transfer_sweep
        from xfer.failure import one_line

        if not sweep_runs(folder):
            return  # no run started from a source-trained trunk (scratch alone): nothing to score
        try:
            transfer_sweep(folder)
        except Exception as err:  # noqa: BLE001 - the scores are an extra; the sweep's summary must still come
            log.error("no transferability scores for the summary: %s (then: python analyze.py transfer "
                      "multirun=%s)", one_line(err), folder)

