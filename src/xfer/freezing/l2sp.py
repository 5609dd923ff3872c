"""L2-SP (Li et al. 2018): fine-tune, pulling the trunk towards its pretrained weights."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from xfer.freezing.fixed import Finetune


class L2SP(Finetune):
    """Finetune plus ½·alpha·‖w − w_pretrained‖² over the trunk. The trunk's weight decay is off: the
    penalty replaces decay towards zero with decay towards the starting point."""

    trunk_weight_decay = 0.0

    def __init__(self, alpha: float = 0.01, **kw):
        super().__init__(**kw)
        self.alpha = alpha

    def validate(self, n_blocks: int) -> None:
        self.check_positive("alpha", self.alpha)

    def callbacks(self) -> list[Any]:
        return [L2SPPenalty(self.alpha)]


class L2SPPenalty(Callback):
    """Snapshots the trunk in ``setup``, before any checkpoint is restored, so a resumed run is pulled
    towards the same pretrained weights as the original one."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.anchor: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.anchor:
            return
        self.anchor = [(p, p.detach().clone()) for p in pl_module.trunk.parameters()]
        pl_module.loss_terms.append(self.penalty)

    def penalty(self, module: pl.LightningModule, feats: torch.Tensor, batch: Any) -> torch.Tensor:
        total = feats.new_zeros(())
        for i, (p, w0) in enumerate(self.anchor):
            if w0.device != p.device:
                w0 = w0.to(p.device)
                self.anchor[i] = (p, w0)
            if p.requires_grad:
                total = total + (p - w0).pow(2).sum()
        value = 0.5 * self.alpha * total
        module.log("train/l2sp", value, on_step=False, on_epoch=True)
        return value
