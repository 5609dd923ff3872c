"""The model of joint training (hard parameter sharing): one trunk, a target and a source adapter and head."""
from __future__ import annotations

from typing import Any

from torch import nn

from xfer.models.module import TransferModule


class JointTransferModule(TransferModule):
    """A TransferModule whose training batches are {"target": ..., "source": ...}, trained on
    L = L_src + lam * L_tgt. The source adapter and head are extra new parts; validation and test see
    the target task alone."""

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
