"""Strategies whose plan changes with the epoch."""
from __future__ import annotations

from xfer.freezing.base import BlockPlan, Freezing, Plan


class GradualUnfreeze(Freezing):
    """Start with the trunk frozen; every ``every_n_epochs`` epochs unfreeze one more block, top block
    first (ULMFiT; Lightning's BackboneFinetuning). A block unfrozen joins at trunk_lr * ``unfreeze_lr_scale``.
    """

    def __init__(self, every_n_epochs: int = 1, unfreeze_lr_scale: float = 1.0, **kw):
        super().__init__(**kw)
        self.every_n_epochs, self.unfreeze_lr_scale = every_n_epochs, unfreeze_lr_scale

    def validate(self, n_blocks: int) -> None:
        self.check_epochs("every_n_epochs", self.every_n_epochs)
        self.check_positive("unfreeze_lr_scale", self.unfreeze_lr_scale)

    def transitions(self) -> bool:
        return True

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        unfrozen = min(n_blocks, epoch // self.every_n_epochs)
        return Plan(tuple(BlockPlan("all", trunk_lr * self.unfreeze_lr_scale) if i >= n_blocks - unfrozen
                          else self.frozen_block(trunk_lr) for i in range(n_blocks)), lr)


class LPFT(Freezing):
    """Linear probe for ``probe_epochs``, then fine-tune everything at the usual lrs times ``lr_factor``
    (Kumar et al. 2022)."""

    def __init__(self, probe_epochs: int = 2, lr_factor: float = 0.5, **kw):
        super().__init__(**kw)
        self.probe_epochs, self.lr_factor = probe_epochs, lr_factor

    def validate(self, n_blocks: int) -> None:
        self.check_epochs("probe_epochs", self.probe_epochs)
        self.check_positive("lr_factor", self.lr_factor)

    def transitions(self) -> bool:
        return True

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        if epoch < self.probe_epochs:
            return Plan(tuple(self.frozen_block(trunk_lr) for _ in range(n_blocks)), lr)
        f = self.lr_factor
        return Plan(tuple(BlockPlan("all", trunk_lr * f) for _ in range(n_blocks)), lr * f)
