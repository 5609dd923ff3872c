"""The read cache: a text reader's output kept between runs is the reader's output, and never stale."""
from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xfer.data import read_cache, readers_image, readers_text
from xfer.data.raw import Raw
from xfer.data.text import TextDataModule
from conftest import full_disk

ROOT = Path(__file__).resolve().parents[1]


def write_csv(file: Path, rows: int = 60, word: str = "good", settled: bool = True) -> None:
    """The file, dated a minute ago when ``settled`` (one modified in the 2 s before a read is not kept)."""
    lines = ["text,label,author"]
    for i in range(rows):
        label = "pos" if i % 2 else "neg"
        lines.append(f'"{word} film number {i}, said {i % 7}",{label},a{i % 9}')
    lines.append(f'"{word} film number 3, said 3",pos,a3')  # a repeat of a text: dropped and counted
    lines.append(",neg,a2")  # an empty text: dropped and counted
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if settled:
        past = time.time_ns() - 60 * 10**9 + rows  # rows: two settled versions never share a time
        os.utime(file, ns=(past, past))


def csv_module(file: Path, cache: Path | None, **reader_args) -> TextDataModule:
    reader = functools.partial(readers_text.read_csv_text, path=str(file), **reader_args)
    return TextDataModule("csv", reader=reader, group_column="author", max_len=8,
                          read_cache_dir=None if cache is None else str(cache))


def same_data(a: TextDataModule, b: TextDataModule) -> None:
    assert a.class_names == b.class_names and a.dropped == b.dropped and a.group_counts == b.group_counts
    for split in ("train", "val", "test"):
        for x, y in zip(a.datasets[split].tensors, b.datasets[split].tensors):
            assert torch.equal(x, y)
        assert np.array_equal(a.indices[split], b.indices[split])


def test_a_warm_read_is_the_cold_read_bit_for_bit(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    plain = csv_module(file, None)
    plain.setup()
    cold = csv_module(file, cache)
    cold.setup()
    warm = csv_module(file, cache)
    warm.setup()
    assert (plain.read_from, cold.read_from, warm.read_from) == ("files", "files", "cache")
    assert len(list(cache.glob("csv_*.json"))) == 1
    assert warm.dropped == {"duplicate_text": 1, "empty_text": 1}
    same_data(plain, cold)
    same_data(plain, warm)


def test_the_raw_round_trips_with_its_groups_and_counts(tmp_path):
    file = tmp_path / "reviews.csv"
    write_csv(file)
    raw = readers_text.read_csv_text(str(file), group_column="author")
    path = tmp_path / "entry.json"
    assert read_cache.store(path, raw)
    back = read_cache.load(path)
    assert back is not None and back.class_names == raw.class_names and back.dropped == raw.dropped
    for split, (items, labels) in raw.splits.items():
        assert back.splits[split][0] == items
        assert back.splits[split][1].dtype == np.int64 and np.array_equal(back.splits[split][1], labels)
        assert list(back.groups[split]) == list(raw.groups[split])


def test_a_changed_file_is_read_again(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    csv_module(file, cache).setup()
    write_csv(file, rows=80, word="bad")  # other texts, another size
    again = csv_module(file, cache)
    again.setup()
    assert again.read_from == "files"
    assert sum(again.sizes().values()) == 80
    fresh = csv_module(file, None)
    fresh.setup()
    same_data(fresh, again)
    third = csv_module(file, cache)  # the entry was replaced: the next run reads it
    third.setup()
    assert third.read_from == "cache" and len(list(cache.glob("*.json"))) == 1


def test_a_file_touched_with_the_same_bytes_is_read_again(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    csv_module(file, cache).setup()
    st = os.stat(file)
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    touched = csv_module(file, cache)
    touched.setup()
    assert touched.read_from == "files"


def test_other_reader_arguments_or_settings_are_other_entries(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    csv_module(file, cache).setup()
    other = csv_module(file, cache, class_names=["pos", "neg"])  # another label order
    other.setup()
    assert other.read_from == "files" and other.class_names == ["pos", "neg"]
    ungrouped = TextDataModule("csv", reader=functools.partial(readers_text.read_csv_text, path=str(file)),
                               max_len=8, read_cache_dir=str(cache))
    ungrouped.setup()
    assert ungrouped.read_from == "files" and ungrouped.group_counts is None
    assert len(list(cache.glob("*.json"))) == 3


def test_the_key_follows_the_readers_code(tmp_path, monkeypatch):
    reader = functools.partial(readers_text.read_csv_text, path="x.csv")
    before = read_cache.key(reader, {})
    monkeypatch.setattr(read_cache, "_code", lambda r: "another version of readers_text.py")
    assert read_cache.key(reader, {}) != before


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"version": 1}', b'{"version": 99, "sources": []}'])
def test_a_torn_or_foreign_entry_is_read_from_the_files_and_replaced(tmp_path, caplog, content):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    csv_module(file, cache).setup()
    (entry,) = cache.glob("*.json")
    entry.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        again = csv_module(file, cache)
        again.setup()
    assert again.read_from == "files"
    assert json.loads(entry.read_text())["version"] == read_cache.VERSION  # replaced whole
    fresh = csv_module(file, None)
    fresh.setup()
    same_data(fresh, again)


def test_a_full_disk_costs_the_cache_not_the_run(tmp_path, monkeypatch, caplog):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    monkeypatch.setattr(read_cache, "atomic_write_bytes", full_disk)
    with caplog.at_level(logging.WARNING):
        dm = csv_module(file, cache)
        dm.setup()
    assert dm.read_from == "files" and sum(dm.sizes().values()) == 60
    assert "could not keep" in caplog.text and not list(cache.glob("*.json"))


def test_an_earlier_entry_survives_a_failed_store(tmp_path, monkeypatch):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    raw = readers_text.read_csv_text(str(file))
    path = cache / "entry.json"
    assert read_cache.store(path, raw)
    kept = path.read_bytes()
    monkeypatch.setattr(read_cache, "atomic_write_bytes", lambda p, d: (_ for _ in ()).throw(OSError(28, "full")))
    assert not read_cache.store(path, raw)
    assert path.read_bytes() == kept


def test_images_and_readers_without_files_are_not_cached(tmp_path):
    images = Raw({"train": (np.zeros((2, 1, 4, 4), dtype=np.uint8), np.array([0, 1]))}, ["a", "b"],
                 sources=["/somewhere/file.idx"])
    texts_from_nowhere = Raw({"train": (["a", "b"], np.array([0, 1]))}, ["a", "b"])
    assert not read_cache.cacheable(images) and not read_cache.cacheable(texts_from_nowhere)
    assert not read_cache.store(tmp_path / "x.json", texts_from_nowhere) and not (tmp_path / "x.json").exists()
    assert readers_image.read_mnist5k().sources == []  # an image reader names no files: read as before


def test_null_turns_it_off(tmp_path):
    file = tmp_path / "reviews.csv"
    write_csv(file)
    for _ in range(2):
        dm = csv_module(file, None)
        dm.setup()
        assert dm.read_from == "files"
    assert not list(tmp_path.rglob("*.json"))


def test_every_text_reader_with_files_names_them(tmp_path):
    file = tmp_path / "reviews.jsonl"
    file.write_text("\n".join(json.dumps({"text": f"text {i}", "label": i % 2}) for i in range(10)) + "\n")
    assert readers_text.read_jsonl(str(file)).sources == [str(file)]
    csv_file = tmp_path / "reviews.csv"
    write_csv(csv_file)
    assert readers_text.read_csv_text(str(csv_file)).sources == [str(csv_file)]
    folder = tmp_path / "splits"
    folder.mkdir()
    write_csv(folder / "train.csv")
    assert readers_text.read_csv_text(str(folder)).sources == [str(folder / "train.csv"), str(folder)]


def test_a_warm_text_run_does_not_import_pandas(tmp_path):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    csv_module(file, cache).setup()
    code = ("import functools, sys; from xfer.data.text import TextDataModule; from xfer.data import readers_text; "
            f"dm = TextDataModule('csv', reader=functools.partial(readers_text.read_csv_text, path={str(file)!r}), "
            f"group_column='author', max_len=8, read_cache_dir={str(cache)!r}); dm.setup(); "
            "print(dm.read_from, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cache", "False"]


def test_the_default_text_configs_keep_the_cache_under_the_root(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", "experiment=img2txt"])
    assert cfg.target.read_cache_dir == f"{tmp_path}/cache/read"


def test_a_file_added_to_the_folder_is_read_again(tmp_path):
    folder, cache = tmp_path / "reviews", tmp_path / "cache"
    folder.mkdir()
    write_csv(folder / "train.csv")
    write_csv(folder / "test.csv", rows=20, word="other")
    past = time.time_ns() - 60 * 10**9
    os.utime(folder, ns=(past, past))  # the folder settled too: a listing just changed is not kept

    def ungrouped() -> TextDataModule:
        return TextDataModule("csv", reader=functools.partial(readers_text.read_csv_text, path=str(folder)),
                              max_len=8, read_cache_dir=str(cache))

    cold = ungrouped()
    cold.setup()
    assert cold.read_from == "files"
    warm = ungrouped()
    warm.setup()
    assert warm.read_from == "cache"
    write_csv(folder / "val.csv", rows=10, word="third")  # the reader now finds a val split of its own
    again = ungrouped()
    again.setup()
    assert again.read_from == "files" and again.sizes()["val"] == 10


def test_a_relative_path_from_another_folder_is_another_file(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    for name, rows in (("one", 40), ("two", 70)):
        (tmp_path / name).mkdir()
        write_csv(tmp_path / name / "reviews.csv", rows=rows, word=name)
    sizes = []
    for name in ("one", "two"):
        monkeypatch.chdir(tmp_path / name)
        dm = TextDataModule("csv", reader=functools.partial(readers_text.read_csv_text, path="reviews.csv"),
                            max_len=8, read_cache_dir=str(cache))
        dm.setup()
        sizes.append((dm.read_from, sum(dm.sizes().values())))
    assert sizes == [("files", 40), ("files", 70)]


@pytest.mark.parametrize("content", [b"[]", b"3", b'{"version": 2, "files": [], "sources": [], "splits": 5}'])
def test_an_entry_of_another_shape_is_read_from_the_files(tmp_path, content):
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)
    csv_module(file, cache).setup()
    (entry,) = cache.glob("*.json")
    entry.write_bytes(content)
    again = csv_module(file, cache)
    again.setup()
    assert again.read_from == "files"


def test_a_file_changed_while_it_is_read_is_not_kept(tmp_path, caplog):
    """The entry records the files' stats after the read: a file edited meanwhile would look read whole."""
    file, cache = tmp_path / "reviews.csv", tmp_path / "cache"
    write_csv(file)

    def edited_while_read(path: str, **kwargs) -> Raw:
        raw = readers_text.read_csv_text(path, **kwargs)
        write_csv(file, rows=80, word="bad", settled=False)  # another writer, after the reader had its bytes
        return raw

    dm = TextDataModule("csv", reader=functools.partial(edited_while_read, path=str(file)), max_len=8,
                        read_cache_dir=str(cache))
    with caplog.at_level(logging.INFO, logger="xfer.data.read_cache"):
        dm.setup()
    assert dm.read_from == "files" and sum(dm.sizes().values()) == 60  # what was read: the file before the edit
    assert "changed while it was read" in caplog.text and not list(cache.glob("csv_*.json"))
    again = csv_module(file, cache)  # the next run reads the edited file; just modified, it is not kept yet
    again.setup()
    assert again.read_from == "files" and sum(again.sizes().values()) == 80 and not list(cache.glob("csv_*.json"))
    settled = time.time_ns() - 3 * 10**9  # the same file, 3 s on: kept
    os.utime(file, ns=(settled, settled))
    csv_module(file, cache).setup()
    third = csv_module(file, cache)
    third.setup()
    assert third.read_from == "cache" and sum(third.sizes().values()) == 80


@pytest.mark.parametrize("offset_s", [-1.5, 0.0, 30.0])  # a coarse clock's stamp just before the read; a server ahead
def test_a_file_dated_near_or_after_the_read_is_not_kept(tmp_path, offset_s):
    file = tmp_path / "reviews.csv"
    write_csv(file)
    raw = readers_text.read_csv_text(str(file))
    started = time.time_ns()
    stamp = started + int(offset_s * 1e9)
    os.utime(file, ns=(stamp, stamp))
    assert not read_cache.store(tmp_path / "entry.json", raw, read_started_ns=started)
    assert not (tmp_path / "entry.json").exists()
    assert read_cache.store(tmp_path / "entry.json", raw, read_started_ns=stamp + 3 * 10**9)  # read 3 s after: kept
