"""Images read from their files when a batch needs them (``in_memory: false``): a folder too large to hold
decoded, served by DataLoader workers that decode in parallel."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class ImageFiles(Dataset):
    """Image files and their labels. ``decode`` turns one file into uint8 [C, H, W] at the data set's fixed
    size (the reader's, so a lazily read image equals the one an in-memory read would hold, bit for bit).
    Reads a batch at a time, like ``TensorBatches``: (images [B, C, H, W], labels [B])."""

    def __init__(self, files: Sequence[str], labels: torch.Tensor, decode: Callable[[str], np.ndarray]):
        self.files, self.labels, self.decode = list(files), labels, decode
        if len(self.files) != len(self.labels):
            raise ValueError(f"{len(self.files)} files but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.files)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.stack([self.decode(self.files[i]) for i in indices]))
        return images, self.labels[torch.as_tensor(indices, dtype=torch.long)]
