"""Strategies that keep one plan for the whole run."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xfer.freezing.base import BlockPlan, Freezing, FreezingError, Plan, TargetBuild


class Finetune(Freezing):
    """Train everything; the trunk at ``trunk_lr``."""


class Scratch(Finetune):
    """Finetune's recipe on a randomly initialised trunk (its config switches the source stage off). A
    random trunk is not a pretrained one to be kept close to: by default it trains at the new parts' lr
    (``optim.lr``), not at ``optim.trunk_lr``; ``trunk_lr`` sets its own."""

    def __init__(self, trunk_lr: float | None = None, **kw):
        super().__init__(**kw)
        if trunk_lr is not None:
            if isinstance(trunk_lr, bool) or not isinstance(trunk_lr, (int, float)):
                raise FreezingError(f"strategy.trunk_lr={trunk_lr!r}; allowed: a number > 0, or null (= optim.lr)")
            self.check_positive("trunk_lr", trunk_lr)
        self.trunk_lr = trunk_lr

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        own = lr if self.trunk_lr is None else float(self.trunk_lr)
        return Plan(tuple(BlockPlan("all", own) for _ in range(n_blocks)), lr)


class LinearProbe(Freezing):
    """Freeze the whole trunk; train the adapter and head."""

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        return Plan(tuple(self.frozen_block(trunk_lr) for _ in range(n_blocks)), lr)


class FrozenRandom(LinearProbe):
    """The control for linear_probe: the same frozen trunk, adapter and head, but the trunk keeps its
    random initial weights (the very weights the source stage starts from). Its BatchNorm statistics
    come from one pass over the source training data, as a pretrained trunk's do, so the only
    difference from linear_probe is trained versus random weights. Its config switches the source
    stage off."""

    def prepare(self, build: TargetBuild) -> tuple[Any, Any]:
        module, data = super().prepare(build)
        build.norm_stats_from_source(module.trunk)
        return module, data


class FreezeFirstK(Freezing):
    """Freeze trunk blocks [0, k) and train the rest (Yosinski et al. 2014, layer transfer). With
    ``reinit_rest`` the blocks from k up start random instead of pretrained (Yosinski's AnB)."""

    def __init__(self, k: int = 2, reinit_rest: bool = False, **kw):
        super().__init__(**kw)
        self.k, self.reinit_rest = k, reinit_rest

    def prepare(self, build: TargetBuild) -> tuple[Any, Any]:
        module, data = super().prepare(build)
        if self.reinit_rest:
            build.reinit(module.trunk, range(self.k, len(module.trunk.blocks)))
        return module, data

    def validate(self, n_blocks: int) -> None:
        if not isinstance(self.k, int) or not 0 <= self.k <= n_blocks:
            raise FreezingError(f"strategy.k={self.k}; allowed: an integer 0..{n_blocks} (the trunk has "
                                f"{n_blocks} blocks)")

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        return Plan(tuple(self.frozen_block(trunk_lr) if i < self.k else BlockPlan("all", trunk_lr)
                          for i in range(n_blocks)), lr)


class TransferFirstK(FreezeFirstK):
    """Copy the first k pretrained blocks, start the rest random, and fine-tune everything
    (Yosinski's AnB+)."""

    def __init__(self, k: int = 2, reinit_rest: bool = True, **kw):
        super().__init__(k=k, reinit_rest=reinit_rest, **kw)

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        return Plan(tuple(BlockPlan("all", trunk_lr) for _ in range(n_blocks)), lr)


class Surgical(Freezing):
    """Train only the listed trunk blocks (Lee et al. 2023, surgical fine-tuning)."""

    def __init__(self, blocks: Sequence[int] = (0,), **kw):
        super().__init__(**kw)
        self.blocks = list(blocks)

    def validate(self, n_blocks: int) -> None:
        bad = [b for b in self.blocks if not isinstance(b, int) or not 0 <= b < n_blocks]
        if bad or not self.blocks:
            raise FreezingError(f"strategy.blocks={self.blocks}; allowed: a non-empty list of block indices "
                                f"0..{n_blocks - 1}")

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        return Plan(tuple(BlockPlan("all", trunk_lr) if i in self.blocks else self.frozen_block(trunk_lr)
                          for i in range(n_blocks)), lr)


class NormOnly(Freezing):
    """Train only the trunk's normalisation affine parameters and biases (plus adapter and head)."""

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        return Plan(tuple(BlockPlan("norm", trunk_lr) for _ in range(n_blocks)), lr)


class LayerwiseLR(Freezing):
    """Discriminative lr: block i trains at trunk_lr * decay^(n - 1 - i), the top block at trunk_lr
    (ULMFiT; timm's layer decay)."""

    def __init__(self, decay: float = 0.5, **kw):
        super().__init__(**kw)
        self.decay = decay

    def validate(self, n_blocks: int) -> None:
        if not 0 < self.decay <= 1:
            raise FreezingError(f"strategy.decay={self.decay}; allowed: 0 < decay <= 1")

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        return Plan(tuple(BlockPlan("all", trunk_lr * self.decay ** (n_blocks - 1 - i))
                          for i in range(n_blocks)), lr)
