"""Joint training (hard parameter sharing; Caruana 1997): source and target batches train together
through one trunk, with L = L_src + lambda * L_tgt. Its config switches the separate source stage off,
so the trunk starts random."""
from __future__ import annotations

from typing import Any

from xfer.data.joint import JointDataModule
from xfer.freezing.base import TargetBuild
from xfer.freezing.fixed import Finetune
from xfer.models.joint import JointTransferModule


class Joint(Finetune):
    def __init__(self, lam: float = 1.0, **kw):
        super().__init__(**kw)
        self.lam = lam

    def validate(self, n_blocks: int) -> None:
        self.check_positive("lam", self.lam)

    def prepare(self, build: TargetBuild) -> tuple[Any, Any]:
        source_adapter, source_head = build.source_adapter_and_head()
        module = build.model(self, cls=JointTransferModule, source_adapter=source_adapter,
                             source_head=source_head, lam=self.lam)
        return module, JointDataModule(build.target, build.source_data())
