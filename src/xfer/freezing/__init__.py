"""Freezing strategies, chosen by ``strategy=<name>``; each one is a ``plan`` per epoch."""
from xfer.freezing.align import AlignRefine
from xfer.freezing.base import BlockPlan, Plan, Freezing, FreezingError
from xfer.freezing.fixed import (Finetune, FreezeFirstK, FrozenRandom, LayerwiseLR, LinearProbe, NormOnly, Scratch,
                                   Surgical, TransferFirstK)
from xfer.freezing.groups import apply_plan, param_groups
from xfer.freezing.joint import Joint
from xfer.freezing.l2sp import L2SP
from xfer.freezing.callback import FreezingCallback
from xfer.freezing.phased import LPFT, GradualUnfreeze

__all__ = [
    "AlignRefine", "BlockPlan", "Finetune", "FreezeFirstK", "FreezingCallback", "FrozenRandom", "GradualUnfreeze", "Joint",
    "L2SP", "LPFT", "LayerwiseLR", "LinearProbe", "NormOnly", "Plan", "Scratch", "Freezing",
    "FreezingError", "Surgical", "TransferFirstK", "apply_plan", "param_groups",
]
