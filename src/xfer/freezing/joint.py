"""Joint training (hard parameter sharing): source and target batches train together through one
trunk, with L = L_src + lambda * L_tgt. No separate source stage; the trunk starts random."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch import nn

from xfer.models.module import TransferModule
from xfer.freezing.fixed import Finetune


class Joint(Finetune):
    name = "joint"
    needs_source = False
    joint_source = True  # the pipeline pairs the target with source batches

    def __init__(self, lam: float = 1.0, **kw):
        super().__init__(**kw)
        self.lam = lam

    def validate(self, n_blocks: int) -> None:
        self.check_positive("lam", self.lam)


class JointTransferModule(TransferModule):
    """A TransferModule whose training batches are {"target": ..., "source": ...}. The source adapter
    and head are extra new parts; validation and test see the target task alone."""

    def __init__(self, *args: Any, source_adapter: nn.Module, source_head: nn.Module, lam: float,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.extra_parts = nn.ModuleDict({"source_adapter": source_adapter, "source_head": source_head})
        self.lam = lam

    def training_step(self, batch, batch_idx):
        target_loss, feats = self._step(batch["target"], "train")
        xs, ys = batch["source"]
        logits = self.extra_parts["source_head"](self.trunk(self.extra_parts["source_adapter"](xs)))
        source_loss = nn.functional.cross_entropy(logits, ys)
        self.log("train/source_loss", source_loss, on_step=False, on_epoch=True, batch_size=len(ys))
        return self.add_loss_terms(source_loss + self.lam * target_loss, feats, batch["target"])


class JointDataModule(pl.LightningDataModule):
    """Target data for val/test; for training, target batches each paired with a source batch (the
    shorter loader cycles)."""

    def __init__(self, target: pl.LightningDataModule, source: pl.LightningDataModule):
        super().__init__()
        self.target, self.source = target, source

    def setup(self, stage: str | None = None) -> None:
        self.target.setup(stage)
        self.source.setup(stage)

    def train_dataloader(self):
        return CombinedLoader({"target": self.target.train_dataloader(),
                               "source": self.source.train_dataloader()}, mode="max_size_cycle")

    def val_dataloader(self):
        return self.target.val_dataloader()

    def test_dataloader(self):
        return self.target.test_dataloader()

    def sizes(self) -> dict[str, int]:
        return self.target.sizes()

    @property
    def dropped(self) -> dict[str, int]:
        return self.target.dropped
