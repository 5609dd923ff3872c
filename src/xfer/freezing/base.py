"""The freezing-strategy seam: what of the trunk trains at each epoch, and at which learning rate.

A freezing strategy (``strategy=<name>`` on the command line) is a ``Freezing``. It answers one
question, ``plan(epoch, n_blocks)``: for every trunk block, is it frozen, training all its parameters,
or training only its normalisation parameters and biases, and at what peak lr. Everything else
(requires_grad flags, BatchNorm modes, optimizer groups, resume) is derived from that answer by
``param_groups`` and ``FreezingCallback``, so a new strategy is a small class with a ``plan``.

A strategy that needs more than a plan builds it in its one hook, ``prepare(build)``: it gets the
target stage's parts (``TargetBuild``: the trunk, built once and holding the source stage's weights when
that stage ran, the target data, and services such as the source data or fresh source parts) and
returns the model and the data the target stage trains. Joint training, align-then-refine, re-initialised
blocks and the frozen-random control are all such hooks; the pipeline knows none of them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from xfer.errors import FreezingError

BNPolicy = Literal["frozen", "train"]
BN_POLICIES: tuple[str, ...] = get_args(BNPolicy)
MODES = ("frozen", "all", "norm")


class TargetBuild(Protocol):
    """What ``Freezing.prepare`` is given (xfer.target_stage builds it)."""

    seed: int
    trunk: Any  # the target stage's trunk (nn.Module), built once; the source stage's weights when it ran
    pretrained: Mapping[str, Any] | None  # the source stage's whole model state (adapter., trunk., head.), or None
    target: Any  # the target data module, set up
    source_eval_batch_size: int

    def model(self, freezing: "Freezing", cls: type | None = None, **extra: Any) -> Any:
        """target adapter -> the trunk -> a new head, with ``freezing``'s parameter groups (``cls``: a
        TransferModule subclass, given ``extra``)."""

    def source_data(self) -> Any:
        """The source data module, set up (built once)."""

    def source_adapter_and_head(self) -> tuple[Any, Any]:
        """A fresh source adapter and head for the trunk, as the source stage builds them."""

    def norm_stats_from_source(self, trunk: Any) -> None:
        """Recompute ``trunk``'s BatchNorm statistics from one pass over the source training data."""

    def reinit(self, trunk: Any, blocks: Iterable[int]) -> None:
        """Re-initialise these trunk blocks, the same random weights for every strategy of a seed."""


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
    """Base class. ``lr`` is the peak lr of the new parts (adapter, head); ``trunk_lr`` the trunk's.
    ``name`` is the config choice (``strategy=lp_ft`` -> ``lp_ft``), set when the pipeline builds it."""

    name = ""
    trunk_weight_decay: float | None = None  # None: optim.weight_decay

    def __init__(self, bn_policy: BNPolicy = "frozen", **settings: Any):
        if bn_policy not in BN_POLICIES:
            raise FreezingError(f"strategy.bn_policy={bn_policy!r}; allowed: {', '.join(BN_POLICIES)}")
        if settings:
            raise FreezingError(f"strategy '{self.label}' has no setting(s) {', '.join(sorted(settings))}")
        self.bn_policy = bn_policy

    @property
    def label(self) -> str:
        """The name, or the class's name before one is set."""
        return self.name or type(self).__name__

    # -- to override -----------------------------------------------------------------------
    def validate(self, n_blocks: int) -> None:
        """Raise FreezingError before training if the strategy cannot apply to ``n_blocks`` blocks."""

    def plan(self, epoch: int, n_blocks: int, lr: float, trunk_lr: float) -> Plan:
        return Plan(tuple(BlockPlan("all", trunk_lr) for _ in range(n_blocks)), lr)

    def prepare(self, build: TargetBuild) -> tuple[Any, Any]:
        """The model and the data module the target stage trains. The default: the target adapter, the
        trunk and a new head, on the target data."""
        return build.model(self), build.target

    def transitions(self) -> bool:
        """True when ``plan`` changes with the epoch (gradual unfreezing, LP-FT, ...)."""
        return False

    def callbacks(self) -> list[Any]:
        """Extra Lightning callbacks (loss terms, phase switches) beyond the freezing schedule."""
        return []

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "name"}
        return {"name": self.label, **out}

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
