"""Hydra callbacks: write the sweep summary when a multirun ends."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SummarizeSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from xfer.report import write_summary

        folder = Path(config.hydra.sweep.dir)
        try:
            s = write_summary(folder)
        except Exception as err:  # noqa: BLE001 - a failed summary must not hide the sweep's results
            log.error("could not write the sweep summary in %s: %s (rerun: python scripts/summarize.py %s)",
                      folder, err, folder)
            return
        print(f"\nsweep summary: {folder / 'summary.md'}  ({len(s.runs)} ok, {len(s.failed)} failed)")
        for size, v in s.comparisons.items():
            line = f"  data={size}: winner {v['winner']} {100 * v['mean']:.1f}%"
            if "p" in v:
                line += f", {100 * v['lead']:+.1f} vs scratch, p={v['p']:.3g}"
            print(line)
