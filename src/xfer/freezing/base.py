"""The strategy seam: what of the trunk trains at each epoch, and at which learning rate.

A strategy answers one question, ``plan(epoch, n_blocks)``: for every trunk block, is it frozen,
training all its parameters, or training only its normalisation parameters and biases, and at what
peak lr. Everything else (requires_grad flags, BatchNorm modes, optimizer groups, resume) is
derived from that answer by ``param_groups`` and the ``FreezingCallback`` callback, so a new strategy
is a small class with a ``plan``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BN_POLICIES = ("frozen", "train")
MODES = ("frozen", "all", "norm")


class FreezingError(ValueError):
    """A strategy that cannot apply to this trunk or these settings."""


@dataclass(frozen=True)
class BlockPlan:
    mode: str  # one of MODES
    lr: float = 0.0


@dataclass(frozen=True)
class Plan:
    """What trains during one epoch. ``new_lr`` is the lr of the new parts (adapter, head, extras);
    None freezes them all; ``head_frozen`` freezes the head alone."""

    blocks: tuple[BlockPlan, ...]
    new_lr: float | None
    head_frozen: bool = False


class Freezing:
    """Base class. ``lr`` is the peak lr of the new parts (adapter, head); ``trunk_lr`` the trunk's."""

    name = "strategy"
    needs_source = True  # False: the trunk starts random and no source stage runs
    # True: before the target stage, the trunk's BatchNorm statistics are recomputed from one pass
    # over the source training data (a random trunk then has the statistics a trained one would)
    norm_stats_from_source = False
    trunk_weight_decay: float | None = None  # None: optim.weight_decay

    def __init__(self, bn_policy: str = "frozen", **settings: Any):
        if bn_policy not in BN_POLICIES:
            raise FreezingError(f"strategy.bn_policy={bn_policy!r}; allowed: {', '.join(BN_POLICIES)}")
        if settings:
            raise FreezingError(f"strategy '{self.name}' has no setting(s) {', '.join(sorted(settings))}")
        self.bn_policy = bn_policy

    # -- to override -----------------------------------------------------------------------
    def validate(self, n_blocks: int) -> None:
        """Raise FreezingError before training if the strategy cannot apply to ``n_blocks`` blocks."""

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        return Plan(tuple(BlockPlan("all", trunk_lr) for _ in range(n_blocks)), lr)

    def reinit_blocks(self, n_blocks: int) -> list[int]:
        """Trunk blocks to re-initialise after the pretrained trunk is loaded (Yosinski's AnB)."""
        return []

    def transitions(self) -> bool:
        """True when ``plan`` changes with the epoch (gradual unfreezing, LP-FT, ...)."""
        return False

    def callbacks(self) -> list[Any]:
        """Extra Lightning callbacks (loss terms, phase switches) beyond the freezing schedule."""
        return []

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"name": self.name, **out}

    # -- helpers for subclasses ------------------------------------------------------------
    def frozen_block(self, trunk_lr: float) -> BlockPlan:
        """A frozen block: nothing trains, or only its norms (at trunk_lr) under bn_policy=train."""
        return BlockPlan("norm", trunk_lr) if self.bn_policy == "train" else BlockPlan("frozen")

    @staticmethod
    def check_positive(key: str, value: float) -> None:
        if not value > 0:
            raise FreezingError(f"strategy.{key}={value}; allowed: a number > 0")

    @staticmethod
    def check_epochs(key: str, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise FreezingError(f"strategy.{key}={value}; allowed: an integer >= 1")
