"""Image classification data: uint8 tensors [N, C, H, W], optionally resized once at load."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from xfer.data.module import SplitDataModule


class ImageDataModule(SplitDataModule):
    """``image_size`` [H, W] resizes every image once at load; a reader that takes ``image_size`` (a
    folder of images of mixed sizes) is handed it and resizes while it reads."""

    modality = "image"
    handed_to_reader = (*SplitDataModule.handed_to_reader, "image_size")

    def __init__(self, name: str, image_size: Sequence[int] | None = None, **kwargs: Any):
        super().__init__(name, **kwargs)
        self.image_size = tuple(image_size) if image_size else None
        self._stats: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())

    def _to_tensor(self, images) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.ndim == 3:  # [N, H, W] -> one channel
            x = x.unsqueeze(1)
        if self.image_size and tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x.float(), size=self.image_size, mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255)
        return x.to(torch.uint8).contiguous()

    def encode(self, items: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {s: self._to_tensor(x) for s, x in items.items()}
        train = out["train"].float() / 255.0
        mean = train.mean(dim=(0, 2, 3))
        std = train.std(dim=(0, 2, 3)).clamp_min(1e-3)
        self._stats = (tuple(mean.tolist()), tuple(std.tolist()))
        return out

    def spec_fields(self) -> dict[str, Any]:
        x = self.datasets["train"].tensors[0]
        return {"channels": int(x.shape[1]), "image_size": (int(x.shape[2]), int(x.shape[3])),
                "mean": self._stats[0], "std": self._stats[1]}
