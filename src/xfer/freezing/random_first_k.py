"""random_first_k: the random-feature control of layer transfer (Yosinski et al. 2014, section 4.3;
Jarrett et al. 2009). The first k trunk blocks keep their random initial weights and stay frozen,
with BatchNorm statistics from one pass over the source data (as frozen_random's); the blocks from k up
train from random at ``optim.trunk_lr``. It is freeze_first_k with ``reinit_rest=true`` (Yosinski's
AnB) minus the training of the k frozen blocks: the difference between the two is what the k
transferred blocks are worth beyond a random frozen feature map. Its config switches the source stage off."""
from __future__ import annotations

from typing import Any

from xfer.freezing.base import BNPolicy, TargetBuild
from xfer.freezing.fixed import FreezeFirstK


class RandomFirstK(FreezeFirstK):
    def __init__(self, k: int = 2, bn_policy: BNPolicy = "frozen"):
        super().__init__(k=k, reinit_rest=False, bn_policy=bn_policy)

    def prepare(self, build: TargetBuild) -> tuple[Any, Any]:
        module, data = super().prepare(build)
        build.norm_stats_from_source(module.trunk)
        return module, data
