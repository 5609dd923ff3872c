"""Text as pixels: each text drawn as a grayscale image, so a whole image model (its adapter and every trunk
block) reads it, as in PIXEL (Rust et al. 2023) and visual text representations (Salesky et al. 2021).

The font is the one Pillow ships (``ImageFont.load_default(size=font_size)``), white on black like MNIST's
digits. Words wrap at the image's width, measured in pixels; lines go on while they fit the height, and the
rest of a longer text is cut (``wrap=False``: one line, cut at the width). A word wider than a line is
broken where it overflows. A character the font has no glyph for (most non-Latin scripts: CJK, Arabic,
Devanagari) is drawn as the font's fallback glyph, and counted: ``rendering`` (results.json
``target.rendering``) holds how many texts were cut and how many characters had no glyph of their own,
with examples. Every split is rendered
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


def _drawn(font: Any, ch: str) -> bytes:
    from PIL import Image, ImageDraw

    size = 2 * sum(font.getmetrics()) + 2
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).text((0, 0), ch, fill=255, font=font)
    return image.tobytes()


class GlyphCheck:
    """Which characters ``font`` draws as its fallback glyph (no glyph of their own): the ones whose drawing
    equals that of a code point no font has. Whitespace never counts. One drawing per distinct character."""

    NO_GLYPH = "\U0010fffd"  # the last private-use code point

    def __init__(self, font: Any):
        self.font, self.fallback, self.seen = font, _drawn(font, self.NO_GLYPH), {}

    def missing(self, ch: str) -> bool:
        if ch not in self.seen:
            self.seen[ch] = not ch.isspace() and _drawn(self.font, ch) == self.fallback
        return self.seen[ch]


def _stats(n: int) -> dict[str, Any]:
    return {"texts": n, "cut": 0, "texts_with_missing_glyphs": 0, "missing_glyph_chars": 0, "missing_glyph_examples": []}


def render(texts: Sequence[str], height: int, width: int, font_size: int, margin: int = 1, wrap_lines: bool = True,
           stats: dict[str, Any] | None = None, draw: bool = True) -> np.ndarray:
    """uint8 [N, height, width]: each text drawn white on black, wrapped (or one line cut at the width),
    top-left aligned. ``stats`` (a dict) receives the counts of ``_stats``; ``draw=False`` counts only."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent
    max_lines = max(1, (height - margin) // line_h) if wrap_lines else 1
    out = np.zeros((len(texts) if draw else 0, height, width), dtype=np.uint8)
    counts, check, examples = _stats(len(texts)), GlyphCheck(font), set()
    for i, text in enumerate(texts):
        text = str(text)
        lines = wrap(text, font, width - 2 * margin, max_lines)
        counts["cut"] += sum(len(line.replace(" ", "")) for line in lines) < len("".join(text.split()))
        missing = [ch for ch in text if check.missing(ch)]
        if missing:
            counts["texts_with_missing_glyphs"] += 1
            counts["missing_glyph_chars"] += len(missing)
            examples.update(missing)
        if draw:
            image = Image.new("L", (width, height), 0)
            pen = ImageDraw.Draw(image)
            for row, line in enumerate(lines):
                pen.text((margin, margin + row * line_h), line, fill=255, font=font)
            out[i] = np.asarray(image, dtype=np.uint8)
    counts["missing_glyph_examples"] = sorted(examples)[:10]
    if stats is not None:
        stats.update(counts)
    return out


def merge_stats(per_split: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The splits' counts added up, with each split's beside them."""
    total = _stats(0)
    examples: set[str] = set()
    for st in per_split.values():
        for key in ("texts", "cut", "texts_with_missing_glyphs", "missing_glyph_chars"):
            total[key] += int(st.get(key, 0))
        examples.update(st.get("missing_glyph_examples", []))
    total["missing_glyph_examples"] = sorted(examples)[:10]
    return {**total, "splits": per_split}


class RenderedTextDataModule(ImageDataModule):
    """A text data set (any text reader) served as images [N, 1, height, width]: an image data module to
    every adapter, trunk and strategy. ``height``/``width``/``font_size``/``wrap`` set the rendering;
    ``cache_dir`` (null: none) keeps the rendered splits between runs."""

    def __init__(self, name: str, height: int = 40, width: int = 120, font_size: int = 8, wrap: bool = True,
                 cache_dir: str | None = None, **kwargs: Any):
        super().__init__(name, **kwargs)
        for key, value, low in (("height", height, 8), ("width", width, 8), ("font_size", font_size, 4)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DataError(f"target.{key}={value!r}; allowed: an integer >= {low}")
        if not isinstance(wrap, bool):
            raise DataError(f"target.wrap={wrap!r}; allowed: true (words wrap onto the lines that fit) or false "
                            f"(one line, cut at the width)")
        self.height, self.width, self.font_size, self.wrap = height, width, font_size, wrap
        self._split_stats: dict[str, dict[str, Any]] = {}
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.from_cache: list[str] = []  # the splits read from the cache (the rest were drawn)

    def _key(self, texts: Sequence[str]) -> str:
        import PIL

        settings = (self.height, self.width, self.font_size, PIL.__version__) + (() if self.wrap else ("one line",))
        h = hashlib.sha256(repr(settings).encode())
        for text in texts:
            h.update(str(text).encode("utf-8", "replace") + b"\0")
        return h.hexdigest()[:20]

    def _rendered(self, split: str, texts: Sequence[str]) -> np.ndarray:
        """One split's images, from the cache when it holds these very texts at these settings; its counts go
        to ``_split_stats`` (from the cache's side file, else counted again without drawing)."""
        import json

        path = None if self.cache_dir is None else self.cache_dir / f"{self.name}_{split}_{self._key(texts)}.npy"
        side = None if path is None else path.with_suffix(".json")
        stats: dict[str, Any] = {}
        if path is not None and path.is_file():
            try:
                images = np.load(path, allow_pickle=False)
                if images.shape == (len(texts), self.height, self.width) and images.dtype == np.uint8:
                    self.from_cache.append(split)
                    try:
                        stats = json.loads(side.read_text())
                    except (OSError, ValueError):  # written before the counts were kept, or torn: count again
                        render(texts, self.height, self.width, self.font_size, wrap_lines=self.wrap, stats=stats,
                               draw=False)
                    self._split_stats[split] = stats
                    return images
                log.warning("rendered-text cache %s holds %s: rendering again", path, images.shape)
            except (OSError, ValueError) as err:  # a torn or foreign file: draw again, and replace it
                log.warning("rendered-text cache %s unreadable (%s): rendering again", path, err)
        images = render(texts, self.height, self.width, self.font_size, wrap_lines=self.wrap, stats=stats)
        self._split_stats[split] = stats
        if path is not None:
            from xfer.io import atomic_write_bytes

            buf = io.BytesIO()
            np.save(buf, images, allow_pickle=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(side, json.dumps(stats).encode())
            atomic_write_bytes(path, buf.getvalue())
        return images

    def encode(self, items: dict[str, Any]) -> dict[str, Any]:
        # a file per split: val and test depend on split_seed alone, and the full training split is the same
        # for every seed, so a sweep renders each once; a training subset (fraction) is rendered on its own
        from xfer.machine import check_memory

        rows, pixels = sum(len(t) for t in items.values()), self.height * self.width
        # before drawing: every split's uint8 images, and their tensor copy
        check_memory(f"target.height={self.height}, target.width={self.width}", 2 * rows * pixels,
                     f"{rows:,} texts drawn as {self.height:,} x {self.width:,} images",
                     lambda budget: f"target.height x target.width <= {int(budget // (2 * rows)):,} pixels")
        encoded = super().encode({split: self._rendered(split, texts) for split, texts in items.items()})
        self.rendering = merge_stats(self._split_stats)
        st = self.rendering
        if st["cut"] or st["missing_glyph_chars"]:
            log.info("rendered %s: %d of %d texts cut to fit %dx%d; %d characters in %d texts drawn as the font's "
                     "fallback glyph (e.g. %s)", self.name, st["cut"], st["texts"], self.height, self.width,
                     st["missing_glyph_chars"], st["texts_with_missing_glyphs"], "".join(st["missing_glyph_examples"]))
        return encoded
