"""The data of joint training: target batches each paired with a source batch."""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader


class JointDataModule(pl.LightningDataModule):
    """Target data for val/test; for training, target batches each paired with a source batch (the
    shorter loader cycles)."""

    def __init__(self, target: pl.LightningDataModule, source: pl.LightningDataModule):
        super().__init__()
        self.target, self.source = target, source

    def setup(self, stage: str | None = None) -> None:
        self.target.trainer = self.source.trainer = self.trainer  # their loaders gather where it trains
        self.target.setup(stage)
        self.source.setup(stage)

    def train_dataloader(self):
        return CombinedLoader({"target": self.target.train_dataloader(),
                               "source": self.source.train_dataloader()}, mode="max_size_cycle")

    def val_dataloader(self):
        return self.target.val_dataloader()

    def test_dataloader(self):
        return self.target.test_dataloader()

    def sizes(self) -> dict[str, int]:
        return self.target.sizes()

    @property
    def dropped(self) -> dict[str, int]:
        return self.target.dropped
