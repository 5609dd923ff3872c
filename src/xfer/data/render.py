"""Text as pixels: each text drawn as a grayscale image, so a whole image model (its adapter and every trunk
block) reads it, as in PIXEL (Rust et al. 2023) and visual text representations (Salesky et al. 2021).

The font is the one Pillow ships (``ImageFont.load_default(size=font_size)``), white on black like MNIST's
digits. Words wrap at the image's width, measured in pixels; lines go on while they fit the height, and the
rest of a longer text is cut. A word wider than a line is broken where it overflows. Every split is rendered
once at setup, and the images are kept in ``cache_dir`` (a file per split, keyed by its texts, the render
settings and Pillow's version), so later runs and sweep jobs read them instead of drawing them again.
"""
from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xfer.data.image import ImageDataModule
from xfer.errors import DataError

log = logging.getLogger(__name__)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def wrap(text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """``text``'s words in lines no wider than ``width`` pixels, at most ``max_lines`` of them."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while font.getlength(line) > width and len(line) > 1:  # a word wider than a line: break it
            cut = 1
            while cut < len(line) and font.getlength(line[:cut + 1]) <= width:
                cut += 1
            lines.append(line[:cut])
            line = line[cut:]
        if len(lines) >= max_lines:
            break
    if line and len(lines) < max_lines:
        lines.append(line)
    return lines[:max_lines]


def render(texts: Sequence[str], height: int, width: int, font_size: int, margin: int = 1) -> np.ndarray:
    """uint8 [N, height, width]: each text drawn white on black, wrapped, top-left aligned."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent
    max_lines = max(1, (height - margin) // line_h)
    out = np.zeros((len(texts), height, width), dtype=np.uint8)
    for i, text in enumerate(texts):
        image = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(image)
        for row, line in enumerate(wrap(str(text), font, width - 2 * margin, max_lines)):
            draw.text((margin, margin + row * line_h), line, fill=255, font=font)
        out[i] = np.asarray(image, dtype=np.uint8)
    return out


class RenderedTextDataModule(ImageDataModule):
    """A text data set (any text reader) served as images [N, 1, height, width]: an image data module to
    every adapter, trunk and strategy. ``height``/``width``/``font_size`` set the rendering; ``cache_dir``
    (null: none) keeps the rendered splits between runs."""

    def __init__(self, name: str, height: int = 40, width: int = 120, font_size: int = 8,
                 cache_dir: str | None = None, **kwargs: Any):
        super().__init__(name, **kwargs)
        for key, value, low in (("height", height, 8), ("width", width, 8), ("font_size", font_size, 4)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DataError(f"{name}.{key}={value!r}; allowed: an integer >= {low}")
        self.height, self.width, self.font_size = height, width, font_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.from_cache: list[str] = []  # the splits read from the cache (the rest were drawn)

    def _key(self, texts: Sequence[str]) -> str:
        import PIL

        h = hashlib.sha256(repr((self.height, self.width, self.font_size, PIL.__version__)).encode())
        for text in texts:
            h.update(str(text).encode("utf-8", "replace") + b"\0")
        return h.hexdigest()[:20]

    def _rendered(self, split: str, texts: Sequence[str]) -> np.ndarray:
        """One split's images, from the cache when it holds these very texts at these settings."""
        path = None if self.cache_dir is None else self.cache_dir / f"{self.name}_{split}_{self._key(texts)}.npy"
        if path is not None and path.is_file():
            try:
                images = np.load(path, allow_pickle=False)
                if images.shape == (len(texts), self.height, self.width) and images.dtype == np.uint8:
                    self.from_cache.append(split)
                    return images
                log.warning("rendered-text cache %s holds %s: rendering again", path, images.shape)
            except (OSError, ValueError) as err:  # a torn or foreign file: draw again, and replace it
                log.warning("rendered-text cache %s unreadable (%s): rendering again", path, err)
        images = render(texts, self.height, self.width, self.font_size)
        if path is not None:
            from xfer.io import atomic_write_bytes

            buf = io.BytesIO()
            np.save(buf, images, allow_pickle=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
        return images

    def encode(self, items: dict[str, Any]) -> dict[str, Any]:
        # a file per split: val and test depend on split_seed alone, and the full training split is the same
        # for every seed, so a sweep renders each once; a training subset (fraction) is rendered on its own
        return super().encode({split: self._rendered(split, texts) for split, texts in items.items()})
