"""The encode cache: a kept tokenizer and ids are what fitting and encoding give, for exactly those texts."""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xfer.data import encode_cache, readers_text
from xfer.data.text import TextDataModule, id_translator
from conftest import full_disk

ROOT = Path(__file__).resolve().parents[1]


def write_csv(file: Path, rows: int = 80, word: str = "good") -> None:
    lines = ["text,label"]
    for i in range(rows):
        lines.append(f'"{word} film {i % 13} number {i}, said {i % 7}",{"pos" if i % 2 else "neg"}')
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")


def module(file: Path, cache: Path | None, **kwargs) -> TextDataModule:
    reader = functools.partial(readers_text.read_csv_text, path=str(file))
    dm = TextDataModule("csv", reader=reader, read_cache_dir=None if cache is None else str(cache),
                        **{"max_len": 8, **kwargs})
    dm.setup()
    return dm


def same_encoding(a: TextDataModule, b: TextDataModule) -> None:
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab() and a.spec == b.spec
    for split in ("train", "val", "test"):
        x, y = a.datasets[split].tensors[0], b.datasets[split].tensors[0]
        assert x.dtype == y.dtype == torch.int64 and torch.equal(x, y)
        assert torch.equal(a.datasets[split].tensors[1], b.datasets[split].tensors[1])
    # the kept tokenizer encodes a text it never saw as the fitted one does: padding, truncation, [UNK]
    text = "a good film, never seen before, and much longer than eight words in all"
    assert a.tokenizer.encode(text).ids == b.tokenizer.encode(text).ids


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*_enc_*.pt"))


def test_a_warm_encoding_is_the_cold_one_bit_for_bit(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    plain, cold, warm = module(file, None), module(file, cache), module(file, cache)
    assert (plain.encoded_from, cold.encoded_from, warm.encoded_from) == ("computed", "computed", "cache")
    assert len(entries(cache)) == 1
    same_encoding(plain, cold)
    same_encoding(plain, warm)


def test_a_kept_tokenizer_translates_between_vocabularies_as_a_fitted_one(tmp_path):
    source_file, target_file, cache = tmp_path / "source.csv", tmp_path / "target.csv", tmp_path / "cache"
    write_csv(source_file, word="good")
    write_csv(target_file, word="bad")
    fitted = id_translator(module(source_file, None), module(target_file, None))
    module(source_file, cache), module(target_file, cache)
    source, target = module(source_file, cache), module(target_file, cache)
    assert source.encoded_from == target.encoded_from == "cache"
    ids = target.datasets["train"].tensors[0]
    assert torch.equal(id_translator(source, target)(ids), fitted(ids))


def test_other_texts_or_settings_are_other_entries(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    module(file, cache)
    for kwargs in ({"max_len": 12}, {"vocab_size": 10}, {"min_frequency": 2}, {"lowercase": False},
                   {"fraction": 0.5}, {"split_seed": 1}):
        other, fresh = module(file, cache, **kwargs), module(file, None, **kwargs)
        assert other.encoded_from == "computed", kwargs
        same_encoding(fresh, other)
    assert len(entries(cache)) == 7
    write_csv(file, word="bad")  # other texts under the same name and settings
    changed = module(file, cache)
    assert changed.encoded_from == "computed"
    same_encoding(module(file, None), changed)


def test_the_key_follows_every_text_and_its_split():
    texts = {"train": ["a b", "c"], "val": ["d"], "test": ["e"]}
    base = encode_cache.key(texts, {"max_len": 8})
    assert encode_cache.key({**texts, "train": ["a", "b c"]}, {"max_len": 8}) != base  # same words, cut elsewhere
    assert encode_cache.key({**texts, "val": ["e"], "test": ["d"]}, {"max_len": 8}) != base  # swapped splits
    assert encode_cache.key(texts, {"max_len": 9}) != base
    assert encode_cache.key({**texts, "test": ["\ud800"]}, {}) != encode_cache.key({**texts, "test": ["?"]}, {})
    assert encode_cache.key({**texts, "train": ["a b", "c", ""]}, {}) != encode_cache.key(texts, {})  # an empty text
    assert encode_cache.key(dict(texts), {"max_len": 8}) == base
    assert encode_cache.key(texts, {"max_len": 8}, code_file=__file__) != base  # another text.py


def test_the_key_follows_the_code_that_encodes(tmp_path):
    texts = {"train": ["a"], "val": ["b"], "test": ["c"]}
    code = tmp_path / "text.py"
    code.write_text("one version")
    before = encode_cache.key(texts, {}, code)
    assert encode_cache.key(texts, {}, code) == before
    code.write_text("another version")
    assert encode_cache.key(texts, {}, code) != before


def test_the_key_follows_the_tokenizers_build_even_where_no_version_is_recorded(tmp_path, monkeypatch):
    """No distribution metadata (a vendored or hand-built tokenizers): the module's __version__, else the
    hash of its compiled extension, keys the entry; never a shared None."""
    import tokenizers
    from importlib import metadata

    texts = {"train": ["a"], "val": ["b"], "test": ["c"]}
    installed = encode_cache.key(texts, {})

    def not_found(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(encode_cache.metadata, "version", not_found)
    assert encode_cache.tokenizers_version() == tokenizers.__version__
    assert encode_cache.key(texts, {}) == installed  # the same version, however it is found
    monkeypatch.setattr(tokenizers, "__version__", "")
    one, other = tmp_path / "one.so", tmp_path / "other.so"
    one.write_bytes(b"one build")
    other.write_bytes(b"another build")
    keys = []
    for binary in (one, other):
        monkeypatch.setattr(tokenizers.tokenizers, "__file__", str(binary), raising=False)
        assert encode_cache.tokenizers_version().startswith("sha256:")
        keys.append(encode_cache.key(texts, {}))
    assert len({installed, *keys}) == 3


def test_ids_are_kept_narrow_and_come_back_as_int64(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    cold = module(file, cache)
    data = torch.load(entries(cache)[0], weights_only=True)
    assert data["ids"]["train"].dtype == torch.int16  # a vocabulary under 32768 words
    assert torch.equal(data["ids"]["train"].to(torch.int64), cold.datasets["train"].tensors[0])
    wide = torch.tensor([[0, 40000]])
    assert encode_cache._narrow(wide, 40001).dtype == torch.int32  # noqa: SLF001
    assert torch.equal(encode_cache._narrow(wide, 40001).to(torch.int64), wide)  # noqa: SLF001


@pytest.mark.parametrize("content", [b"", b"not a torch file", "foreign", "shape", "bad tokenizer", "padding",
                                     "out of vocabulary"])
def test_a_torn_or_foreign_entry_is_encoded_again_and_replaced(tmp_path, caplog, content):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    cold = module(file, cache)
    path = entries(cache)[0]
    if content == "foreign":
        torch.save({"version": encode_cache.VERSION, "tokenizer": 3, "ids": {}}, path)
    elif isinstance(content, str):
        data = torch.load(path, weights_only=True)
        if content == "shape":
            data["ids"]["train"] = data["ids"]["train"][:, :4]
        elif content == "bad tokenizer":
            data["tokenizer"] = "{not a tokenizer"
        elif content == "padding":
            data["tokenizer"] = data["tokenizer"].replace('"Fixed":8', '"Fixed":9')
            assert '"Fixed":9' in data["tokenizer"]
        else:
            data["ids"]["val"][0, 0] = 32000
        torch.save(data, path)
    else:
        path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        again = module(file, cache)
    assert again.encoded_from == "computed"
    if content != "foreign":  # a foreign layout is a quiet miss; a damaged entry says so
        assert "encode cache" in caplog.text and "unreadable" in caplog.text
    same_encoding(cold, again)
    assert module(file, cache).encoded_from == "cache"  # replaced


def test_a_full_disk_costs_the_entry_not_the_run(tmp_path, monkeypatch, caplog):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    monkeypatch.setattr(encode_cache, "atomic_write_bytes", full_disk)
    with caplog.at_level(logging.WARNING):
        dm = module(file, cache)
    assert dm.encoded_from == "computed" and sum(dm.sizes().values()) == 80
    assert "could not keep" in caplog.text and not entries(cache)


def test_the_folder_keeps_to_its_budget_least_recently_used_first(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    paths = []
    for i in range(4):
        p = folder / f"set_enc_{i}.pt"
        p.write_bytes(b"x" * 100)
        os.utime(p, ns=(10**18 + i * 10**9,) * 2)  # 0 oldest .. 3 newest
        paths.append(p)
    other = folder / "set_0123.json"  # a read-cache entry: never the encode cache's to delete
    other.write_bytes(b"x" * 1000)
    os.utime(paths[0], ns=(10**18 + 9 * 10**9,) * 2)  # 0 used last
    # oldest first: 1 (kept: the entry just written), 2, then 3 brings the four 100-byte entries to 200
    assert encode_cache.trim(folder, keep=paths[1], budget=250) == [paths[2], paths[3]]
    assert entries(folder) == [paths[0], paths[1]] and other.exists()
    assert encode_cache.trim(folder, keep=paths[1], budget=0) == [paths[0]]  # the kept one stays, whatever its size
    assert entries(folder) == [paths[1]]


def test_a_hit_marks_the_entry_used(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    module(file, cache)
    path = entries(cache)[0]
    os.utime(path, ns=(10**18, 10**18))
    assert module(file, cache).encoded_from == "cache"
    assert path.stat().st_mtime_ns > 10**18 + 10**15


def test_null_turns_it_off(tmp_path):
    file = tmp_path / "reviews.csv"
    write_csv(file)
    for _ in range(2):
        assert module(file, None).encoded_from == "computed"
    assert not list(tmp_path.rglob("*.pt"))


def test_a_warm_run_fits_no_tokenizer(tmp_path):
    """In a fresh process, a warm module neither trains a tokenizer nor encodes a text."""
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    module(file, cache)
    code = ("import functools, sys\n"
            "from xfer.data import readers_text, text\n"
            "calls = []\n"
            "text.fit_tokenizer = lambda *a, **k: calls.append('fit')\n"
            "text.encode_texts = lambda *a, **k: calls.append('encode')\n"
            f"dm = text.TextDataModule('csv', reader=functools.partial(readers_text.read_csv_text, path={str(file)!r}),"
            f" max_len=8, read_cache_dir={str(cache)!r}); dm.setup()\n"
            "print(dm.encoded_from, calls, dm.spec.vocab_size)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split()[:2] == ["cache", "[]"]
