"""Freezing strategies, chosen by ``strategy=<name>``; each one is a ``plan`` per epoch."""
from xfer.strategies.align import AlignRefine
from xfer.strategies.base import BlockPlan, Plan, Strategy, StrategyError
from xfer.strategies.basic import (Finetune, FreezeFirstK, FrozenRandom, LayerwiseLR, LinearProbe, NormOnly, Scratch,
                                   Surgical, TransferFirstK)
from xfer.strategies.groups import apply_plan, param_groups
from xfer.strategies.joint import Joint
from xfer.strategies.l2sp import L2SP
from xfer.strategies.schedule import FreezeSchedule
from xfer.strategies.scheduled import LPFT, GradualUnfreeze

__all__ = [
    "AlignRefine", "BlockPlan", "Finetune", "FreezeFirstK", "FreezeSchedule", "FrozenRandom", "GradualUnfreeze", "Joint",
    "L2SP", "LPFT", "LayerwiseLR", "LinearProbe", "NormOnly", "Plan", "Scratch", "Strategy",
    "StrategyError", "Surgical", "TransferFirstK", "apply_plan", "param_groups",
]
