"""FreezingCallback: the Lightning callback that carries a strategy's plan through training."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
import torch
from torch.optim import Optimizer

from xfer.models.lr_schedule import PeakScaledLR
from xfer.freezing.base import Freezing, FreezingError
from xfer.freezing.groups import apply_plan, param_groups, plan_for


class FreezingCallback(Callback):
    """Applies the strategy's plan before the optimizer is built and at the start of every epoch.

    Newly trainable parameters join the optimizer as new groups, at their peak lr times the factor
    the scheduler currently runs at. The last applied epoch is saved in the checkpoint; on resume the
    same transitions are replayed, in the same order, before the optimizer state is loaded, so the
    optimizer has exactly the groups it was saved with (Lightning #6891).
    """

    def __init__(self, freezing: Freezing, optim: dict[str, Any]):
        self.freezing = freezing
        self.optim = dict(optim)
        self.applied_epoch = 0
        self._restored_epoch = 0
        # Parameters unfrozen after DDP wrapped the model: DDP's reducer never saw them, so their
        # gradients are averaged across processes here instead (else the replicas drift apart).
        self._late: list[torch.nn.Parameter] = []

    # the first plan must be in place before configure_optimizers builds the groups
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            apply_plan(pl_module, plan_for(pl_module, self.freezing, self.optim, 0))
            self.applied_epoch = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._advance(trainer, pl_module, self._restored_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._advance(trainer, pl_module, trainer.current_epoch)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        grads = [p.grad for p in self._late if p.grad is not None]
        if not grads or trainer.world_size < 2:
            return
        flat = trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
        for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(chunk.view_as(g))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size < 2:
            return
        # Cheap guard against silent drift: every replica must hold the same weights.
        checksum = torch.stack([p.detach().double().sum() for p in pl_module.parameters()]).sum().reshape(1)
        sums = trainer.strategy.all_gather(checksum).reshape(-1)
        if not torch.allclose(sums, sums[0], rtol=0, atol=1e-9 * max(1.0, float(sums[0].abs()))):
            raise RuntimeError(f"DDP replicas hold different weights after epoch {trainer.current_epoch} "
                               f"(checksums {sums.tolist()}); this is a bug in xfer, please report it")

    def state_dict(self) -> dict[str, Any]:
        return {"applied_epoch": self.applied_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_epoch = int(state_dict["applied_epoch"])

    # -- internals ---------------------------------------------------------------------------
    def _advance(self, trainer: pl.Trainer, module: pl.LightningModule, epoch: int) -> None:
        if not self.freezing.transitions():
            return
        optimizer = trainer.optimizers[0]
        for e in range(self.applied_epoch + 1, epoch + 1):
            self._reconcile(optimizer, module, e, _scale(trainer))
            self.applied_epoch = e

    def _reconcile(self, optimizer: Optimizer, module: pl.LightningModule, epoch: int, scale: float) -> None:
        wanted = param_groups(module, self.freezing, self.optim, epoch)
        apply_plan(module, plan_for(module, self.freezing, self.optim, epoch))
        owner = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        for spec in wanted:
            for group in {id(owner[id(p)]): owner[id(p)] for p in spec["params"] if id(p) in owner}.values():
                group["peak_lr"], group["lr"] = spec["lr"], spec["lr"] * scale
            missing = [p for p in spec["params"] if id(p) not in owner]
            self._late += missing
            if missing:
                optimizer.add_param_group({**spec, "params": missing, "peak_lr": spec["lr"],
                                           "lr": spec["lr"] * scale})
        trainable = {id(p) for spec in wanted for p in spec["params"]}
        refrozen = [g["name"] for g in optimizer.param_groups if any(id(p) not in trainable for p in g["params"])]
        if refrozen:
            raise FreezingError(f"strategy '{self.freezing.label}' froze groups {refrozen} again at epoch "
                                f"{epoch}; a plan may only unfreeze")


def _scale(trainer: pl.Trainer) -> float:
    """The factor the lr scheduler currently applies to every group's peak lr."""
    for config in trainer.lr_scheduler_configs:
        if isinstance(config.scheduler, PeakScaledLR):
            return config.scheduler.factor()
    return 1.0
