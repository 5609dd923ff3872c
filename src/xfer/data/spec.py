"""What a model needs to know about a data set, and nothing more."""
from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")  # the three splits every data module serves, in this order


@dataclass(frozen=True)
class DataSpec:
    """Shape facts that a data module hands to the adapter and the head.

    ``modality`` is "image" or "text". Image fields are set for images, text fields for text.
    """

    name: str
    modality: str
    num_classes: int
    class_names: tuple[str, ...] = field(default=())
    # images: uint8 [C, H, W]; the adapter normalises with these per-channel statistics
    channels: int = 0
    image_size: tuple[int, int] = (0, 0)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # text: int64 token ids [L], padded with pad_id
    vocab_size: int = 0
    seq_len: int = 0
    pad_id: int = 0
