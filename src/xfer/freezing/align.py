"""Align-then-refine (ORCA, Shen et al. 2023): first teach the target adapter to speak the trunk's
language, then fine-tune.

Phase 1 (``align_epochs``): the trunk and head are frozen; only the adapter trains, on a kernel MMD
between the trunk's features of target batches and its features of source images. Phase 2: fine-tune
everything on the task loss.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from xfer.freezing.base import BlockPlan, Plan, Freezing


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Biased MMD² with a sum of Gaussian kernels, bandwidths relative to the median distance."""
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    median = d2.detach()[d2.detach() > 0].median().clamp_min(1e-6)
    k = sum(torch.exp(-d2 / (s * median)) for s in scales)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class AlignRefine(Freezing):
    name = "align_refine"
    wants_source_features = True

    def __init__(self, align_epochs: int = 1, align_weight: float = 1.0, **kw):
        super().__init__(**kw)
        self.align_epochs, self.align_weight = align_epochs, align_weight
        self._source_features: torch.Tensor | None = None

    def validate(self, n_blocks: int) -> None:
        self.check_epochs("align_epochs", self.align_epochs)
        self.check_positive("align_weight", self.align_weight)

    def transitions(self) -> bool:
        return True

    def attach_source_features(self, feats: torch.Tensor) -> None:
        self._source_features = feats

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        if epoch < self.align_epochs:
            return Plan(tuple(self.frozen_block(trunk_lr) for _ in range(n_blocks)), lr, head_frozen=True)
        return Plan(tuple(BlockPlan("all", trunk_lr) for _ in range(n_blocks)), lr)

    def callbacks(self) -> list[Any]:
        if self._source_features is None:
            raise RuntimeError("align_refine needs the source features: call attach_source_features first")
        return [AlignPhase(self._source_features, self.align_epochs, self.align_weight)]


class AlignPhase(Callback):
    """During the align epochs: task loss off, MMD to a random batch of source features on."""

    def __init__(self, source_features: torch.Tensor, align_epochs: int, weight: float):
        self.source_features, self.align_epochs, self.weight = source_features, align_epochs, weight
        self.active = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.term not in pl_module.loss_terms:
            pl_module.loss_terms.append(self.term)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.active = trainer.current_epoch < self.align_epochs
        pl_module.task_loss_weight = 0.0 if self.active else 1.0

    def term(self, module: pl.LightningModule, feats: torch.Tensor, batch: Any) -> torch.Tensor:
        if not self.active:
            return feats.new_zeros(())
        bank = self.source_features
        pick = torch.randint(len(bank), (len(feats),), device=bank.device)
        loss = self.weight * mmd_rbf(feats, bank[pick].to(feats.device))
        module.log("train/align_mmd", loss, on_step=False, on_epoch=True)
        return loss
