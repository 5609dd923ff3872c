"""Text as pixels (experiment=img2txt_render): the rendering, its cache, and the image model reading it
whole, the source's adapter included."""
from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import QUICK, run_in_process
from xfer.data.readers_text import read_csv_text
from xfer.data.render import RenderedTextDataModule, _font, render, wrap
from xfer.errors import ConfigError, DataError


def test_words_wrap_within_the_width_and_stop_at_the_last_line():
    font = _font(8)
    lines = wrap("the quick brown fox jumps over the lazy dog " * 5, font, 60, 3)
    assert len(lines) == 3 and all(font.getlength(line) <= 60 for line in lines)
    assert lines[0].startswith("the quick")
    long = wrap("a" * 80, font, 60, 10)  # one word wider than a line: broken where it overflows
    assert "".join(long) == "a" * 80 and all(font.getlength(line) <= 60 for line in long)
    assert wrap("", font, 60, 3) == [] and wrap("   ", font, 60, 3) == []


def test_render_draws_each_text_white_on_black_deterministically():
    texts = ["Achieves a sort of filmic epiphany", "", "x " * 500]
    a, b = render(texts, 40, 120, 8), render(texts, 40, 120, 8)
    assert a.shape == (3, 40, 120) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a[0].max() > 200 and (a[0] > 0).mean() > 0.02  # ink (antialiased), in the first line
    assert a[0, :12].sum() > 0 and a[0, 24:].sum() == 0  # one line of text: the rows below stay black
    assert a[1].sum() == 0  # an empty text is a black image
    ascent, descent = _font(8).getmetrics()
    rows = np.flatnonzero((a[2] > 0).any(axis=1))  # a long text fills every line and is cut, not an error
    assert rows.max() >= 2 * (ascent + descent) and rows.max() < 40
    assert not np.array_equal(a[0], render(["achieves a sort of filmic epiphany"], 40, 120, 8)[0])  # case shows


def test_characters_without_a_glyph_are_drawn_as_the_fallback_and_counted():
    """CJK and Arabic have no glyph in Pillow's own font (it covers ASCII and typographic quotes; not even
    accented letters): they are drawn as its fallback glyph (the same pixels as a code point no font has),
    and counted with examples; ASCII and spaces are not."""
    import string

    from xfer.data.render import GlyphCheck, merge_stats

    font = _font(8)
    check = GlyphCheck(font)
    assert not any(check.missing(ch) for ch in string.printable + "’“”")
    assert check.missing("中") and check.missing("م") and check.missing("é")
    stats: dict = {}
    a = render(["a fine film", "电影很好", "فيلم جيد", "ok 中"], 40, 120, 8, stats=stats)
    assert stats["texts"] == 4 and stats["texts_with_missing_glyphs"] == 3
    assert stats["missing_glyph_chars"] == 4 + 7 + 1  # every non-space character of the CJK and Arabic texts
    assert "中" in stats["missing_glyph_examples"] and len(stats["missing_glyph_examples"]) <= 10
    assert a[1].sum() > 0  # drawn (as fallback glyphs), not left black
    assert np.array_equal(render(["中"], 40, 120, 8)[0], render(["\U0010fffd"], 40, 120, 8)[0])
    merged = merge_stats({"train": stats, "val": {**stats, "missing_glyph_examples": ["م"]}})
    assert merged["missing_glyph_chars"] == 24 and merged["splits"]["train"] == stats


def test_long_texts_wrap_or_stay_on_one_line_as_configured():
    long = "the quick brown fox jumps over the lazy dog " * 5
    wrapped, one = {}, {}
    a = render([long, "short"], 40, 120, 8, stats=wrapped)
    b = render([long, "short"], 40, 120, 8, wrap_lines=False, stats=one)
    ascent, descent = _font(8).getmetrics()
    assert np.flatnonzero((a[0] > 0).any(axis=1)).max() >= ascent + descent  # more than one line
    assert np.flatnonzero((b[0] > 0).any(axis=1)).max() < ascent + descent + 1  # one line only
    assert wrapped["cut"] == 1 and one["cut"] == 1  # both cut the long text; neither the short one
    assert np.array_equal(a[1], b[1])


def _csv(path: Path, n: int = 120) -> str:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            w.writerow([f"{'great fun' if i % 2 else 'dull and long'} film number {i}", "pos" if i % 2 else "neg"])
    return str(path)


def _module(path: str, cache: Path | None, **kw) -> RenderedTextDataModule:
    dm = RenderedTextDataModule("reviews", reader=partial(read_csv_text, path=path), cache_dir=cache, **kw)
    dm.setup()
    return dm


def test_a_text_data_set_is_served_as_images_and_rendered_once(tmp_path: Path, monkeypatch):
    path = _csv(tmp_path / "r.csv")
    dm = _module(path, tmp_path / "cache")
    spec = dm.spec
    assert spec.modality == "image" and spec.channels == 1 and spec.num_classes == 2
    x, y = dm.datasets["train"].__getitems__([0, 1])
    assert x.shape == (2, 1, 40, 120) and x.dtype == torch.uint8 and dm.from_cache == []
    assert len(list((tmp_path / "cache").glob("reviews_*.npy"))) == 3  # one file per split

    import xfer.data.render as r

    drawn = []
    monkeypatch.setattr(r, "render", lambda texts, *a, **k: drawn.append(len(texts)) or np.zeros(0))
    again = _module(path, tmp_path / "cache")
    assert drawn == [] and again.from_cache == ["train", "val", "test"]
    assert torch.equal(again.datasets["test"].__getitems__(list(range(5)))[0],
                       dm.datasets["test"].__getitems__(list(range(5)))[0])
    monkeypatch.undo()
    half = _module(path, tmp_path / "cache", fraction=0.5)  # another training subset: drawn; val and test read
    assert half.from_cache == ["val", "test"]
    other = _module(path, tmp_path / "cache", font_size=10)  # other settings: another key
    assert other.from_cache == []
    line = _module(path, tmp_path / "cache", wrap=False)  # one line per text: another key too
    assert line.from_cache == [] and line.rendering["texts"] == 120
    # the counts are kept beside the images, and recounted (not redrawn) where a cache predates them
    assert again.rendering == dm.rendering and dm.rendering["cut"] == 0
    for f in (tmp_path / "cache").glob("reviews_*.json"):
        f.unlink()
    real = r.render
    monkeypatch.setattr(r, "render", lambda *a, draw=True, **k: pytest.fail("drew again") if draw else real(
        *a, draw=False, **k))
    assert _module(path, tmp_path / "cache").rendering["texts"] == 120


def test_a_torn_cache_file_is_drawn_again(tmp_path: Path):
    path = _csv(tmp_path / "r.csv")
    _module(path, tmp_path / "cache")
    for f in (tmp_path / "cache").glob("reviews_test_*.npy"):
        f.write_bytes(b"torn")
    dm = _module(path, tmp_path / "cache")
    assert dm.from_cache == ["train", "val"] and dm.datasets["test"].__getitems__([0])[0].shape == (1, 1, 40, 120)


@pytest.mark.parametrize("key, value", [("height", 4), ("font_size", 0), ("width", "wide")])
def test_bad_render_settings_are_one_line(tmp_path: Path, key: str, value):
    with pytest.raises(DataError, match=rf"^target\.{key}={value!r}; allowed: an integer >= \d+$"):
        RenderedTextDataModule("reviews", reader=partial(read_csv_text, path=_csv(tmp_path / "r.csv")),
                               **{key: value})


def test_a_rendering_too_large_for_memory_is_one_line_before_drawing(tmp_path: Path, monkeypatch):
    """height x width x rows is known at load: a size the machine cannot hold is refused, naming the
    settings, the estimate, what is available and what would fit, before one text is drawn."""
    import xfer.data.render as r
    import xfer.machine as machine

    monkeypatch.setattr(machine, "available_memory", lambda: (64 * 2**20, "MemAvailable"))
    monkeypatch.setattr(r, "render", lambda *a, **k: pytest.fail("drew before checking the memory"))
    with pytest.raises(ConfigError) as err:
        _module(_csv(tmp_path / "r.csv"), tmp_path / "cache", height=4000, width=4000)
    msg = str(err.value)
    assert msg.startswith("target.height=4000, target.width=4000: ") and "images needs about" in msg
    assert " is available (MemAvailable" in msg and "allowed here: target.height x target.width <= " in msg
    assert not (tmp_path / "cache").exists()


def test_the_target_adapter_starts_from_the_source_adapter_or_says_why_not():
    from xfer.data.spec import DataSpec
    from xfer.models.adapters import ImageAdapter
    from xfer.target_stage import load_source_adapter

    spec = DataSpec(name="d", modality="image", num_classes=2, class_names=("a", "b"), channels=1,
                    mean=(0.1,), std=(0.3,), image_size=(40, 120))
    source, target = ImageAdapter(spec, 32), ImageAdapter(spec, 32)
    pretrained = {f"adapter.{k}": v for k, v in source.state_dict().items()}
    cfg = OmegaConf.create({"source_adapter": {"_target_": "xfer.models.adapters.ImageAdapter"},
                            "target_adapter": {"_target_": "xfer.models.adapters.ImageAdapter"}})
    assert not torch.equal(target.stem[0].weight, source.stem[0].weight)
    load_source_adapter(target, pretrained, cfg)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
    rgb = ImageAdapter(DataSpec(**{**spec.__dict__, "channels": 3, "mean": (0.1,) * 3, "std": (0.3,) * 3}), 32)
    with pytest.raises(ConfigError, match=r"^target_adapter_from_source=true: .*stem\.0\.weight is \(32, 1, 3, 3\) in "
                                          r"the source adapter, \(32, 3, 3, 3\) in the target's; allowed: "):
        load_source_adapter(rgb, pretrained, cfg)


def test_img2txt_render_runs_one_batch_of_each_stage(home: Path):
    # small val and test splits: every snippet of them is drawn, even for one batch
    r = run_in_process(["experiment=img2txt_render", *QUICK, "target.fraction=0.05", "target.val_fraction=0.03",
                        "target.test_fraction=0.03", "trainer.fast_dev_run=true"], home)
    assert r["status"] == "ok" and r["target"]["dataset"] == "rt_sentiment_render"
    assert r["source"]["dataset"] == "mnist5k"


@pytest.mark.slow
def test_img2txt_render_trains_the_whole_image_model_on_rendered_snippets(home: Path):
    r = run_in_process(["experiment=img2txt_render", *QUICK, "target.fraction=0.05"], home)
    assert r["status"] == "ok" and r["target"]["dataset"] == "rt_sentiment_render"
    assert r["target"]["groups"]["test"] > 0  # the movie grouping holds
    assert len(list((home / "cache" / "rendered").glob("rt_sentiment_render_*.npy"))) == 3
