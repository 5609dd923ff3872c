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

from xfer.checkpoints import part_state
from xfer.errors import FreezingError
from xfer.freezing.base import BlockPlan, Freezing, Plan, TargetBuild


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, scales: tuple[float, ...]) -> torch.Tensor:
    """Biased MMD² with a sum of Gaussian kernels, bandwidths ``scales`` times the median squared distance."""
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    median = d2.detach()[d2.detach() > 0].median().clamp_min(1e-6)
    k = sum(torch.exp(-d2 / (s * median)) for s in scales)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class AlignRefine(Freezing):
    """``bank_size`` source training images are fed through the pretrained source adapter and trunk once,
    before training; each align step draws a batch of those features. ``mmd_scales``: the kernels'
    bandwidths, relative to the median squared distance."""

    def __init__(self, align_epochs: int = 1, align_weight: float = 1.0, bank_size: int = 2048,
                 mmd_scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0), **kw):
        super().__init__(**kw)
        self.align_epochs, self.align_weight = align_epochs, align_weight
        self.bank_size, self.mmd_scales = bank_size, tuple(float(s) for s in mmd_scales)
        self._source_features: torch.Tensor | None = None

    def validate(self, n_blocks: int) -> None:
        self.check_epochs("align_epochs", self.align_epochs)
        self.check_positive("align_weight", self.align_weight)
        self.check_epochs("bank_size", self.bank_size)
        if not self.mmd_scales or any(not s > 0 for s in self.mmd_scales):
            raise FreezingError(f"strategy.mmd_scales={list(self.mmd_scales)}; allowed: a non-empty list of numbers > 0")

    def prepare(self, build: TargetBuild) -> tuple[Any, Any]:
        if build.pretrained is None:
            raise FreezingError("strategy align_refine aligns to the source stage's features; allowed only with "
                                "source_stage.enabled=true")
        module, data = super().prepare(build)
        self.attach_source_features(self.source_features(build, module.trunk))
        return module, data

    @torch.no_grad()
    def source_features(self, build: TargetBuild, trunk: torch.nn.Module) -> torch.Tensor:
        """The pretrained trunk's features of (up to ``bank_size``) source training images, through the
        source stage's trained adapter."""
        adapter, _ = build.source_adapter_and_head()
        adapter.load_state_dict(part_state(build.pretrained, "adapter."))
        was_training = trunk.training
        adapter.eval(), trunk.eval()
        chunks = build.source_data().inputs("train", build.source_eval_batch_size, limit=self.bank_size)
        feats = torch.cat([trunk(adapter(chunk)) for chunk in chunks])
        trunk.train(was_training)
        return feats

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
        return [AlignPhase(self._source_features, self.align_epochs, self.align_weight, self.mmd_scales)]


class AlignPhase(Callback):
    """During the align epochs: task loss off, MMD to a random batch of source features on."""

    def __init__(self, source_features: torch.Tensor, align_epochs: int, weight: float,
                 scales: tuple[float, ...]):
        self.source_features, self.align_epochs, self.weight = source_features, align_epochs, weight
        self.scales = scales
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
        loss = self.weight * mmd_rbf(feats, bank[pick].to(feats.device), self.scales)
        module.log("train/align_mmd", loss, on_step=False, on_epoch=True)
        return loss
