"""Image classification data: uint8 tensors [N, C, H, W], optionally resized once at load, or image files
decoded a batch at a time (a reader's lazy read); training batches optionally augmented."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from xfer.data.augment import Augment, Augmented
from xfer.data.image_files import ImageFiles
from xfer.data.module import SplitDataModule

STATS_SAMPLE = 10_000  # a lazily read training split estimates its mean and std from this many images


class ImageDataModule(SplitDataModule):
    """``image_size`` [H, W] resizes every image once at load; a reader that takes ``image_size`` (a
    folder of images of mixed sizes) is handed it and resizes while it reads.

    ``augment`` (an ``Augment``: the ``augment`` config group) transforms each training image anew in every
    epoch; val and test never. The adapter's per-channel mean and std come from the training split: all of
    it when it is in memory, a seeded sample of ``STATS_SAMPLE`` images when it is read lazily."""

    modality = "image"
    handed_to_reader = (*SplitDataModule.handed_to_reader, "image_size")

    def __init__(self, name: str, image_size: Sequence[int] | None = None, augment: Augment | None = None,
                 **kwargs: Any):
        super().__init__(name, **kwargs)
        self.image_size = tuple(image_size) if image_size else None
        if augment is not None and not isinstance(augment, Augment):
            raise ValueError(f"{name}.augment={augment!r}; allowed: an augment config "
                             f"(augment@<side>.augment=none|flip_crop|randaugment|trivialaugment) or null")
        self.augment = augment if augment else None
        self._stats: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
        self._shape: tuple[int, int, int] = (0, 0, 0)

    @property
    def lazy(self) -> bool:
        """Whether the images are read from their files batch by batch."""
        return self.decode is not None

    def _to_tensor(self, images) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.ndim == 3:  # [N, H, W] -> one channel
            x = x.unsqueeze(1)
        if self.image_size and tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x.float(), size=self.image_size, mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255)
        return x.to(torch.uint8).contiguous()

    def check_memory(self, items: dict[str, Any]) -> None:
        """What loading the images takes, checked before anything is resized or stacked: the uint8 images
        kept, plus the largest float copy on the way (a split resized: its input and its output as float,
        twice; the training mean and std: the training images as float, twice; measured). Read lazily:
        the ``STATS_SAMPLE`` training images the mean and std are measured on, decoded at ``image_size``."""
        from xfer.machine import check_memory

        if self.lazy:
            h, w = self.image_size or (0, 0)
            c = 1 if getattr(self.decode, "mode", "") == "L" else 3
            shapes = {"train": (min(len(items["train"]), STATS_SAMPLE), c, h, w, h, w)}
        else:
            shapes = {}
            for split, x in items.items():
                dims = tuple(np.shape(x))  # [N, C, H, W], or [N, H, W] for one channel
                n, c, h0, w0 = (dims[0], 1, *dims[1:]) if len(dims) == 3 else dims
                shapes[split] = (n, c, h0, w0, *(self.image_size or (h0, w0)))
        kept = sum(n * c * h * w for n, c, _, _, h, w in shapes.values())
        resized = max((4 * n * c * h0 * w0 + 8 * n * c * h * w for n, c, h0, w0, h, w in shapes.values()
                       if (h0, w0) != (h, w)), default=0)
        n, c, _, _, h, w = shapes["train"]
        stats = (8 + self.lazy) * n * c * h * w  # lazily read: the decoded images too, before they are stacked
        need = kept + max(resized, stats)
        if not need:
            return
        rows = sum(v[0] for v in shapes.values())
        size = "null" if self.image_size is None else list(self.image_size)
        check_memory(f"target.image_size={size}", need,
                     f"{rows:,} images of {c} x {h:,} x {w:,} (uint8, and the float copies made while resizing "
                     f"and measuring their mean and std)",
                     lambda budget: f"target.image_size=[H, W] with H x W <= {int(budget * h * w // need):,} pixels")

    def encode(self, items: dict[str, Any]) -> dict[str, Any]:
        self.check_memory(items)  # before resizing or stacking: a huge image_size is a line, not exit 137
        if self.lazy:
            return self._sample_stats(items)
        out = {s: self._to_tensor(x) for s, x in items.items()}
        self._set_stats(out["train"])
        return out

    def _set_stats(self, train: torch.Tensor) -> None:
        x = train.float() / 255.0
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        self._stats = (tuple(mean.tolist()), tuple(std.tolist()))
        self._shape = tuple(int(v) for v in train.shape[1:])  # type: ignore[assignment]

    def _sample_stats(self, files: dict[str, list[str]]) -> dict[str, list[str]]:
        train = files["train"]
        pick = np.random.default_rng(self.split_seed).permutation(len(train))[:STATS_SAMPLE]
        assert self.decode is not None
        self._set_stats(torch.from_numpy(np.stack([self.decode(train[i]) for i in np.sort(pick)])))
        return files

    def dataset(self, inputs: Any, labels: torch.Tensor) -> Dataset:
        if self.lazy:
            assert self.decode is not None
            return ImageFiles(inputs, labels, self.decode)
        return super().dataset(inputs, labels)

    def served(self, split: str, train: bool) -> Dataset:
        data = super().served(split, train)
        return Augmented(data, self.augment) if train and self.augment else data

    def spec_fields(self) -> dict[str, Any]:
        c, h, w = self._shape
        return {"channels": c, "image_size": (h, w), "mean": self._stats[0], "std": self._stats[1]}
