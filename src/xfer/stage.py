"""One stage's training: fit, then test the best checkpoint, timed."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from xfer import build
from xfer.callbacks import LastEveryEpoch, stage_timing


# Set by the user (or a cluster) before xfer started: a rendezvous port then stays theirs.
_PORT_GIVEN = "MASTER_PORT" in os.environ


def fresh_rendezvous(trainer: pl.Trainer) -> None:
    """Give the next spawn-based launch (ddp_spawn: fit, then test) a port of its own.

    Lightning's spawn launcher writes the port it picked into the parent's ``MASTER_PORT`` and never
    removes it, so every later launch in the process (the test after the fit, the next stage, the next
    job of a basic-launcher sweep) rendezvouses on that same port, while the previous launch's sockets may
    still hold it. Each launch gets a free port instead, unless the user set MASTER_PORT."""
    from lightning_fabric.plugins.environments.lightning import LightningEnvironment, find_free_network_port
    from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    if _PORT_GIVEN or not isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        return
    env = trainer.strategy.cluster_environment  # a spawn launcher's strategy is a DDP one, which has it
    if type(env) is not LightningEnvironment:
        return
    os.environ["MASTER_PORT"] = str(find_free_network_port())
    env._main_port = -1  # it caches the port it read first; read the new one  # noqa: SLF001


@dataclass
class Progress:
    """How far a stage got when a signal stopped it: ``epochs_done`` finished epochs of ``max_epochs``
    (the last of them in ``last_ckpt``, when it exists)."""
    stage: str
    epochs_done: int
    max_epochs: int
    last_ckpt: Path


@dataclass
class StageResult:
    test: dict[str, float]
    wall_s: float
    best_val: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def fit_and_test(cfg: DictConfig, module: pl.LightningModule, dm: pl.LightningDataModule, run_dir: Path,
                 stage: str, callbacks: list, ckpt_path: str | None = None, **trainer_overrides: Any
                 ) -> tuple[StageResult, pl.Trainer]:
    """Fit ``module`` (from ``ckpt_path`` when resuming), then test its best checkpoint, except where a
    tuning trial of the target stage must never look at the test split (``eval_test=false``). A signal
    that stops it leaves with how far the stage got (``xfer_progress``), for the failure policy."""
    start = time.perf_counter()
    trainer = build.trainer(cfg, run_dir, stage, callbacks, **trainer_overrides)
    tested = [{}]
    try:
        fresh_rendezvous(trainer)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        best = None if trainer.fast_dev_run else "best"
        if stage != "target" or cfg.get("eval_test", True):
            fresh_rendezvous(trainer)
            tested = trainer.test(module, datamodule=dm, ckpt_path=best, weights_only=True, verbose=False)
    except BaseException as stop:
        if not isinstance(stop, Exception):  # a signal (SIGTERM, Ctrl-C): where it stopped, for results.json
            saved = max((cb.epochs_saved for cb in trainer.callbacks if isinstance(cb, LastEveryEpoch)), default=0)
            stop.xfer_progress = Progress(stage, max(int(trainer.current_epoch), saved),  # type: ignore[attr-defined]
                                          int(trainer.max_epochs or 0), run_dir / "checkpoints" / stage / "last.ckpt")
        raise
    ckpt = trainer.checkpoint_callback
    best_val = float(ckpt.best_model_score) if ckpt is not None and ckpt.best_model_score is not None else None
    return StageResult(dict(tested[0]), time.perf_counter() - start, best_val,
                       {"timing": stage_timing(trainer)}), trainer
