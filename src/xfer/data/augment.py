"""Train-time image augmentation: torchvision.transforms.v2 transforms, applied to each image of a training
batch on its own (a v2 transform called on a whole batch would draw one crop, one flip for all of it).

A data set's ``augment`` node (the ``augment`` config group: none, flip_crop, randaugment, trivialaugment)
builds an ``Augment``; the data module applies it to its training batches only. Evaluation (val, test,
predictions, features) never augments. The transforms draw from torch's global RNG, which the per-epoch
reseed owns, so a resumed run augments as an uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class Augment:
    """uint8 images [B, C, H, W] -> the same shape, each image through ``transforms`` in turn. No transforms:
    falsy, and the data module skips it (no per-image work at all)."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]] = ()):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"augment.transforms has {t!r}, which is not a transform; allowed: "
                                 f"_target_ nodes of torchvision.transforms.v2 classes")
        # a setting that fails only when applied (RandAugment's magnitude past its bins) fails here, at load
        with torch.random.fork_rng(devices=[]):
            for t in self.transforms:
                for channels in (1, 3, 1, 3):  # random ops: a few tries
                    try:
                        t(torch.zeros(channels, 16, 16, dtype=torch.uint8))
                    except Exception as err:  # noqa: BLE001 - any failure is a bad setting of that transform
                        raise ValueError(f"augment: {t!r} fails on a {channels}-channel image: {err}") from None

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def one(self, image: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            image = t(image)
        return image

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.one(image) for image in images]
        shapes = {tuple(o.shape) for o in out}
        if len(shapes) > 1 or (out and out[0].shape != images.shape[1:]):
            raise ValueError(f"augment changed the image size from {tuple(images.shape[1:])} to {sorted(shapes)[0]}; "
                             f"allowed: transforms that keep the size (crop back with padding, as PadCrop does)")
        return torch.stack(out) if out else images

    def __repr__(self) -> str:
        return f"Augment({self.transforms})"


class PadCrop(nn.Module):
    """Pad by ``padding`` pixels on every side, then crop a random window of the image's own size: the
    CIFAR recipe's shift, for any image size (``v2.RandomCrop`` needs the size written down)."""

    def __init__(self, padding: int = 4, padding_mode: str = "reflect"):
        super().__init__()
        if padding < 0:
            raise ValueError(f"PadCrop.padding={padding}; allowed: an integer >= 0")
        self.padding, self.padding_mode = int(padding), padding_mode

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        if not self.padding:
            return image
        h, w = image.shape[-2:]
        padded = TF.pad(image, [self.padding], padding_mode=self.padding_mode)
        top, left = (int(v) for v in torch.randint(0, 2 * self.padding + 1, (2,)))
        return TF.crop(padded, top, left, h, w)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, padding_mode={self.padding_mode!r}"


class Augmented(torch.utils.data.Dataset):
    """A batch-reading data set (``__getitems__`` -> (images, labels)) whose images come out augmented."""

    def __init__(self, data: torch.utils.data.Dataset, augment: Augment):
        self.data, self.augment = data, augment

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        images, *rest = self.data.__getitems__(indices)
        return (self.augment(images), *rest)
