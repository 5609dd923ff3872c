"""Every dataset reader on small files written here in the real formats, no network: IDX gz,
torchvision's folder layouts, ImageFolder, Orange .tab, the classic CSVs with quotes and newlines in
fields, your own CSV and JSONL, and a local Hugging Face dataset. Then the real offline corpora."""
from __future__ import annotations

import gzip
import inspect
import json
import pickle
import re
import struct
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from xfer.data import DataError, ImageDataModule, TextDataModule
from xfer.data import readers, readers_image, readers_text
from xfer.data.raw import encode_labels, label_order

# each data set's reader function, as its config names it (test_config_names_a_reader_whose_arguments_fit)
READERS = {
    "mnist5k": readers_image.read_mnist5k, "mnist": readers_image.read_mnist,
    "fashion_mnist": readers_image.read_fashion_mnist, "kmnist": readers_image.read_kmnist,
    "cifar10": readers_image.read_cifar10, "image_folder": readers_image.read_image_folder,
    "rt_sentiment": readers_text.read_rt_sentiment, "newsgroups20": readers_text.read_newsgroups20,
    "reuters8": readers_text.read_reuters8, "reuters52": readers_text.read_reuters52,
    "ag_news": readers_text.read_ag_news, "dbpedia": readers_text.read_dbpedia, "yelp": readers_text.read_yelp,
    "csv": readers_text.read_csv_text, "jsonl": readers_text.read_jsonl, "hf": readers_text.read_hf,
}
DIGITS = "zero one two three four five six seven eight nine".split()


# -- writers of the real formats ---------------------------------------------------------------
def write_idx(file: Path, array: np.ndarray) -> None:
    """IDX: 0x0000, type 0x08 (uint8), ndim, big-endian uint32 dims, then the bytes; gz by suffix."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    with (gzip.open(file, "wb") if file.suffix == ".gz" else open(file, "wb")) as fh:
        fh.write(data)


def write_mnist_like(folder: Path, per_class: int = 6, test_per_class: int = 2, gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n, prefix in (("train", per_class, "train"), ("test", test_per_class, "t10k")):
        labels = np.repeat(np.arange(10, dtype=np.uint8), n)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        out[split] = (images, labels)
    return out


def text_of(i: int, cls: str) -> str:
    """A unique text whose every word the tokenizer learns from train (so encoded rows are unique)."""
    return f"topic {cls} " + " ".join(DIGITS[int(d)] for d in f"{i:04d}")


def rows_of(classes: list[str], n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(c, text_of(start + k * len(classes) + j, c)) for k in range(n) for j, c in enumerate(classes)]


def write_orange(file: Path, rows: list[tuple[str, str]]) -> None:
    """Orange .tab: header, the types row, the flags row, a blank row (as in r52), then the data."""
    lines = ["Category\tText", "d\tstring", "class\t", "\t"] + [f"{c}\t{t}" for c, t in rows]
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")


def csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def write_classic(folder: Path, n_classes: int, n_text: int, train: int = 10, test: int = 3) -> None:
    """No header, a 1-based label, then title and body (or a lone text), every field quoted."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, start in (("train", train, 0), ("test", test, 5000)):
        lines = []
        for label, text in rows_of([str(c) for c in range(1, n_classes + 1)], n, start):
            fields = [f"title {text}", "body"] if n_text == 2 else [text]
            lines.append(",".join([csv_field(label)] + [csv_field(f) for f in fields]))
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_jsonl(file: Path, rows: list[tuple[str, str]], text: str = "text", label: str = "label") -> None:
    file.write_text("".join(json.dumps({text: t, label: c}) + "\n" for c, t in rows), encoding="utf-8")


def write_csv(file: Path, rows: list[tuple[str, str]]) -> None:
    file.write_text("label,text\n" + "".join(f"{c},{csv_field(t)}\n" for c, t in rows), encoding="utf-8")


# -- IDX and the MNIST-like sets ----------------------------------------------------------------
def test_idx_parser_reads_the_real_format_and_refuses_damage(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", images)
    assert np.array_equal(readers_image.read_idx(tmp_path / "x.gz", "demo"), images)
    (tmp_path / "bad").write_bytes(b"\x08\x03\x00\x00garbage")
    with pytest.raises(DataError, match=r"'demo'.*not an IDX file"):
        readers_image.read_idx(tmp_path / "bad", "demo")
    whole = gzip.decompress((tmp_path / "x.gz").read_bytes())
    (tmp_path / "cut").write_bytes(whole[:-5])
    with pytest.raises(DataError, match=r"header promises 24"):
        readers_image.read_idx(tmp_path / "cut", "demo")
    (tmp_path / "notgz.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        readers_image.read_idx(tmp_path / "notgz.gz", "demo")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_mnist_like_reads_idx_gz_folder_with_official_split(tmp_path, name):
    written = write_mnist_like(tmp_path)
    raw = READERS[name](str(tmp_path), download=False)
    assert len(raw.class_names) == 10 and set(raw.splits) == {"train", "test"}
    x, y = raw.splits["train"]
    assert x.shape == (60, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x[:, 0], written["train"][0]) and np.array_equal(y, written["train"][1])


def test_mnist_reads_torchvision_layout_like_torchvision(tmp_path):
    import torchvision

    write_mnist_like(tmp_path / "MNIST" / "raw", gz=False)  # what torchvision leaves after a download
    raw = READERS["mnist"](None, root=str(tmp_path), download=False)
    theirs = torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)
    assert np.array_equal(raw.splits["test"][0][:, 0], theirs.data.numpy())
    assert np.array_equal(raw.splits["test"][1], theirs.targets.numpy())


def test_fashion_mnist_defaults_to_the_debian_folder(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "debian")
    monkeypatch.setattr(readers_image, "DEBIAN_FASHION", tmp_path / "debian")
    raw = READERS["fashion_mnist"](None, root=str(tmp_path / "nowhere"), download=False)
    assert raw.class_names[0] == "T-shirt/top" and len(raw.splits["test"][1]) == 20


@pytest.mark.skipif(not readers_image.DEBIAN_FASHION.is_dir(), reason="Debian's fashion-mnist not installed")
def test_fashion_mnist_from_the_real_debian_folder():
    raw = READERS["fashion_mnist"](None, root="/nonexistent", download=False)
    assert raw.splits["train"][0].shape == (60000, 1, 28, 28) and len(raw.splits["test"][1]) == 10000


def test_mnist_offline_without_files_names_dataset_folder_and_fix(tmp_path):
    with pytest.raises(DataError, match=rf"'mnist'.*{re.escape(str(tmp_path / 'none'))}.*download=true") as err:
        READERS["mnist"](None, root=str(tmp_path / "none"), download=False)
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    empty = re.escape(str(tmp_path / "empty"))
    with pytest.raises(DataError, match=rf"'kmnist': no usable copy in {empty}.*rois-codh"):
        READERS["kmnist"](str(tmp_path / "empty"), download=False)


def test_mnist_labels_out_of_range_are_refused(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(20, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="labels outside 0..9"):
        READERS["mnist"](str(tmp_path), download=False)


# -- CIFAR-10 through torchvision ----------------------------------------------------------------
def write_cifar(root: Path, per_batch: int = 10) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)  # rows: R plane, G, B
        first = data if first is None else first
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": list(range(per_batch))}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    return first


def test_cifar10_reads_torchvision_layout_as_nchw(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    first = write_cifar(tmp_path)
    with pytest.raises(DataError, match=r"'cifar10'.*corrupted.*cifar-10-python"):  # md5 check fails
        READERS["cifar10"](str(tmp_path), download=False)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    raw = READERS["cifar10"](str(tmp_path / "cifar-10-batches-py"), download=False)
    x, y = raw.splits["train"]
    assert x.shape == (50, 3, 32, 32) and raw.splits["test"][0].shape == (10, 3, 32, 32)
    assert np.array_equal(x[0, 1], first[0, 1024:2048].reshape(32, 32))  # green plane stays green
    assert raw.class_names == [f"c{i}" for i in range(10)]


# -- a folder per class ----------------------------------------------------------------------------
def make_images(folder: Path, per_class: int = 6, classes: tuple[str, ...] = ("cat", "dog", "eel")) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    modes = ["RGB", "L", "RGBA", "P"]
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (10 + i, 7 + 2 * i)
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            mode = modes[i % 4]
            Image.fromarray(arr).convert(mode).save(folder / c / f"{i}.{'jpg' if mode in ('RGB', 'L') else 'png'}")


def test_image_folder_converts_resizes_and_counts_skips(tmp_path):
    make_images(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    raw = READERS["image_folder"](str(tmp_path), channels=3, image_size=[16, 12])
    x, y = raw.splits["train"]
    assert x.shape == (18, 3, 16, 12) and x.dtype == np.uint8 and raw.class_names == ["cat", "dog", "eel"]
    assert raw.dropped == {"corrupt_image": 1, "not_an_image": 1}
    grey = READERS["image_folder"](str(tmp_path), channels=1, image_size=[8, 8])
    assert grey.splits["train"][0].shape == (18, 1, 8, 8)
    with pytest.raises(DataError, match=r"different sizes.*source.image_size"):
        READERS["image_folder"](str(tmp_path), channels=3, image_size=None)


def test_image_folder_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"'image_folder': .*empty has no class sub-folders"):
        READERS["image_folder"](str(tmp_path / "empty"))
    (tmp_path / "empty" / "cat").mkdir()
    with pytest.raises(DataError, match="no readable training images"):
        READERS["image_folder"](str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"no folder given; set source.reader.path"):
        READERS["image_folder"](None)


def test_image_folder_train_test_layout_and_test_only_class_is_refused(tmp_path):
    make_images(tmp_path / "train", classes=("cat", "dog"))
    make_images(tmp_path / "test", per_class=2, classes=("cat", "dog"))
    raw = READERS["image_folder"](str(tmp_path), image_size=[8, 8])
    assert set(raw.splits) == {"train", "test"} and len(raw.splits["test"][1]) == 4
    make_images(tmp_path / "test", per_class=2, classes=("yak",))
    dm = ImageDataModule("image_folder", reader=partial(READERS["image_folder"], str(tmp_path)), image_size=[8, 8])
    with pytest.raises(DataError, match=r"\['yak'\] appear in test but not in train"):
        dm.setup()


# -- the data module over every image reader ---------------------------------------------------------
def _split_rows(dm) -> list[set[bytes]]:
    return [{r.numpy().tobytes() for r in dm.datasets[s].tensors[0]} for s in ("train", "val", "test")]


def _assert_disjoint(dm) -> None:
    tr, va, te = _split_rows(dm)
    assert not (tr & va) and not (tr & te) and not (va & te)


@pytest.mark.parametrize("name", ["mnist", "image_folder"])
def test_image_module_subsets_are_balanced_seeded_and_disjoint(tmp_path, name):
    if name == "mnist":
        write_mnist_like(tmp_path, per_class=10, test_per_class=2)
        args = dict(reader=partial(READERS["mnist"], str(tmp_path), download=False), val_fraction=0.2)
    else:
        make_images(tmp_path, per_class=12)
        args = dict(reader=partial(READERS["image_folder"], str(tmp_path)), image_size=[8, 8])
    full = ImageDataModule(name, **args)
    full.setup()
    _assert_disjoint(full)
    few = ImageDataModule(name, samples_per_class=3, seed=4, **args)
    few.setup()
    counts = torch.bincount(few.datasets["train"].tensors[1])
    assert counts.tolist() == [3] * len(few.class_names)
    half = ImageDataModule(name, fraction=0.5, seed=4, **args)
    half.setup()
    assert abs(half.sizes()["train"] - full.sizes()["train"] / 2) <= len(half.class_names)
    assert half.sizes()["test"] == full.sizes()["test"]
    assert _split_rows(few)[0] <= _split_rows(full)[0]  # the subset only ever draws from train


# -- text: the offline Orange corpora ----------------------------------------------------------------
@pytest.mark.parametrize("name, stem", [("newsgroups20", "20newsgroups"), ("reuters8", "reuters-r8"),
                                        ("reuters52", "reuters-r52")])
def test_orange_tab_files_with_blank_rows_and_cross_split_duplicates(tmp_path, name, stem):
    train = rows_of(["earn", "acq", "ship"], 5)
    test = rows_of(["earn", "acq", "ship"], 2, start=900) + [train[0]]  # a train text again in test
    write_orange(tmp_path / f"{stem}-train.tab", train)
    write_orange(tmp_path / f"{stem}-test.tab", test)
    raw = READERS[name](str(tmp_path))
    assert raw.class_names == ["acq", "earn", "ship"]
    assert len(raw.splits["train"][1]) == 15 and len(raw.splits["test"][1]) == 6
    assert raw.dropped == {"blank_row": 2, "duplicate_text": 1}
    (tmp_path / f"{stem}-test.tab").unlink()
    with pytest.raises(DataError, match=rf"'{name}': no {stem}-test.tab in {re.escape(str(tmp_path))}"):
        READERS[name](str(tmp_path))


@pytest.fixture(scope="module")
def real_orange():
    return {n: READERS[n]() for n in ("newsgroups20", "reuters8")}


@pytest.mark.parametrize("name, n_classes, n_train, n_test", [("newsgroups20", 20, 11293, 7528),
                                                               ("reuters8", 8, 5485, 2189)])
def test_real_offline_corpora_shapes_classes_and_disjoint_splits(real_orange, name, n_classes, n_train, n_test):
    raw = real_orange[name]
    assert len(raw.class_names) == n_classes
    kept = {s: len(y) for s, (_, y) in raw.splits.items()}
    assert kept["train"] + kept["test"] + raw.dropped["duplicate_text"] == n_train + n_test
    dm = TextDataModule(name, reader=READERS[name], samples_per_class=20, seed=1)
    items, labels = dm._split(raw)  # the splitting alone; tokenising 18k posts is left to the smoke run
    assert np.bincount(labels["train"]).tolist() == [20] * n_classes
    assert len(items["test"]) == kept["test"]
    texts = [set(items[s]) for s in ("train", "val", "test")]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


# -- text: the classic CSV sets ----------------------------------------------------------------------
def test_classic_csv_keeps_quotes_and_newlines_inside_fields(tmp_path):
    folder = tmp_path / "ag_news_csv"
    write_classic(folder, 4, 2, train=3, test=1)
    with open(folder / "train.csv", "a", encoding="utf-8") as fh:
        fh.write('"3","Wall St. says ""hi""","first line\nsecond, line\\nthird"\n')
    raw = READERS["ag_news"](str(folder))
    assert raw.class_names == ["World", "Sports", "Business", "Sci/Tech"]
    texts, labels = raw.splits["train"]
    assert 'Wall St. says "hi". first line\nsecond, line third' in texts
    assert labels[texts.index('Wall St. says "hi". first line\nsecond, line third')] == 2
    assert len(texts) == 13 and len(raw.splits["test"][0]) == 4


@pytest.mark.parametrize("name, n_classes, n_text", [("ag_news", 4, 2), ("dbpedia", 14, 2), ("yelp", 2, 1)])
def test_classic_csv_sets_map_one_based_labels(tmp_path, name, n_classes, n_text):
    write_classic(tmp_path, n_classes, n_text)
    raw = READERS[name](str(tmp_path))
    assert len(raw.class_names) == n_classes
    texts, labels = raw.splits["train"]
    assert np.bincount(labels).tolist() == [10] * n_classes
    assert texts[0].startswith("title topic 1") if n_text == 2 else texts[0].startswith("topic 1")


def test_classic_csv_refuses_bad_labels_missing_and_empty_files(tmp_path):
    write_classic(tmp_path, 14, 2)  # dbpedia's file given as ag_news: labels up to 14
    with pytest.raises(DataError, match=r"'ag_news': labels \['10', '11'.*not among its 4 classes"):
        READERS["ag_news"](str(tmp_path))
    (tmp_path / "x").mkdir()
    where = re.escape(str(tmp_path / "x"))
    with pytest.raises(DataError, match=rf"'dbpedia': no train.csv in {where}.*dbpedia_csv"):
        READERS["dbpedia"](str(tmp_path / "x"))
    (tmp_path / "test.csv").write_text("")
    with pytest.raises(DataError, match=r"test.csv is empty"):
        READERS["dbpedia"](str(tmp_path))
    (tmp_path / "test.csv").write_text('"1","unterminated\n')
    with pytest.raises(DataError, match=r"cannot parse .*test.csv"):
        READERS["dbpedia"](str(tmp_path))


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    write_classic(tmp_path, 2, 1, train=4, test=1)
    with open(tmp_path / "train.csv", "ab") as fh:
        fh.write(b'"2","caf\xe9 cr\xe8me latin-1 bytes"\n')
    raw = READERS["yelp"](str(tmp_path))
    assert raw.dropped == {"replaced_non_utf8": 1}
    assert "caf\ufffd cr\ufffdme latin-1 bytes" in raw.splits["train"][0]
    latin = READERS["yelp"](str(tmp_path), encoding="latin-1")
    assert "café crème latin-1 bytes" in latin.splits["train"][0] and not latin.dropped


# -- text: your own CSV / JSONL -------------------------------------------------------------------------
def test_csv_columns_header_and_cleaning(tmp_path):
    file = tmp_path / "mine.csv"
    file.write_text('id,title,body,stars\n1,Good,"great, really",5\n2,,"meh\nok",3\n3,Bad,,\n'
                    '4,Bad,"   ",1\n5,Good,"great, really",5\n', encoding="utf-8")
    raw = READERS["csv"](str(file), text_column=["title", "body"], label_column="stars")
    assert raw.splits["train"][0] == ["Good. great, really", "meh\nok", "Bad"]
    assert raw.class_names == ["1", "3", "5"]
    assert raw.dropped == {"missing_label": 1, "duplicate_text": 1}  # "Bad" row 3 lost its label
    noheader = tmp_path / "plain.csv"
    noheader.write_text('"one text",a\n"two text",b\n', encoding="utf-8")
    raw = READERS["csv"](str(noheader), text_column=0, label_column=1, header=False)
    assert raw.splits["train"][0] == ["one text", "two text"] and raw.class_names == ["a", "b"]
    (tmp_path / "t.tsv").write_text('label\ttext\nb\t"a, tab\tinside"\n', encoding="utf-8")
    assert READERS["csv"](str(tmp_path / "t.tsv"), sep="tab").splits["train"][0] == ["a, tab\tinside"]
    with pytest.raises(DataError, match=r"'csv': .*mine.csv has no column 'text'.*set text_column"):
        READERS["csv"](str(file))


def test_label_order_is_numeric_when_labels_are_numbers():
    import pandas as pd

    assert label_order(["10", "9", "1"]) == ["1", "9", "10"] and label_order(["b", "a"]) == ["a", "b"]
    with pytest.raises(DataError, match=r"'demo': labels \['x'\]"):
        encode_labels(pd.Series(["a", "x"]), ["a", "b"], "demo")


def test_jsonl_skips_and_counts_bad_lines(tmp_path):
    file = tmp_path / "d.jsonl"
    write_jsonl(file, rows_of(["pos", "neg"], 3), text="review", label="y")
    with open(file, "a", encoding="utf-8") as fh:
        fh.write('{"review": "line\u2028separator inside", "y": "pos"}\n{"review": "cut sh\n[1, 2]\n'
                 '{"review": "no label"}\n')
    raw = READERS["jsonl"](str(file), text_column="review", label_column="y")
    assert "line\u2028separator inside" in raw.splits["train"][0]
    assert raw.dropped == {"bad_json_line": 2, "missing_label": 1}
    with pytest.raises(DataError, match=r"no line of .*d.jsonl has the key 'text'"):
        READERS["jsonl"](str(file))
    (tmp_path / "junk.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match="no JSON object lines"):
        READERS["jsonl"](str(tmp_path / "junk.jsonl"))


# -- text: Hugging Face datasets ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path_factory.mktemp("hf") / "saved"
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos", "mixed"])})
    names = ["neg", "pos", "mixed"]

    def split(n: int, start: int) -> datasets.Dataset:
        rows = rows_of(names, n, start)
        return datasets.Dataset.from_dict({"sentence": [t for _, t in rows],
                                           "label": [names.index(c) for c, _ in rows]}, features=features)
    datasets.DatasetDict({"train": split(12, 0), "test": split(3, 5000)}).save_to_disk(str(folder))
    return folder


def test_hf_reads_a_local_save_to_disk_folder(hf_folder):
    raw = READERS["hf"](str(hf_folder), text_column="sentence")
    assert raw.class_names == ["neg", "pos", "mixed"]  # ClassLabel order, not alphabetical
    assert len(raw.splits["train"][0]) == 36 and np.bincount(raw.splits["test"][1]).tolist() == [3, 3, 3]
    with pytest.raises(DataError, match=r"'hf': no column 'text'.*sentence"):
        READERS["hf"](str(hf_folder))
    with pytest.raises(DataError, match=r"no split 'dev'.*target.reader.val_split"):
        READERS["hf"](str(hf_folder), text_column="sentence", val_split="dev")


def test_hf_without_data_or_library_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"'imdb': no folder .*nowhere.*save_to_disk"):
        READERS["hf"](str(tmp_path / "nowhere"), dataset="imdb")
    with pytest.raises(DataError, match=r"target.reader.hub_id=.*target.reader.path="):
        READERS["hf"](None)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(DataError, match=r"pip install 'xfer\[hf\]'"):
        READERS["hf"](None, hub_id="stanfordnlp/imdb")


# -- the data module over every text reader -------------------------------------------------------------
CLASSES = ["red", "green", "blue"]


def _target_files(tmp_path: Path, name: str) -> tuple[str, dict]:
    """A folder in ``name``'s format: 16 train and 4 test texts per class, one train text repeated
    in test. Returns (path, the reader's other keyword arguments)."""
    train, test = rows_of(CLASSES, 16), rows_of(CLASSES, 4, start=5000) + [rows_of(CLASSES, 1)[0]]
    if name in ("newsgroups20", "reuters8", "reuters52"):
        stem = {"newsgroups20": "20newsgroups", "reuters8": "reuters-r8", "reuters52": "reuters-r52"}[name]
        write_orange(tmp_path / f"{stem}-train.tab", train)
        write_orange(tmp_path / f"{stem}-test.tab", test)
        return str(tmp_path), {}
    if name in ("ag_news", "dbpedia", "yelp"):
        to_number = {c: str(i + 1) for i, c in enumerate(CLASSES)}
        title = "" if name == "yelp" else '"a title",'  # yelp: label, text; the others: label, title, body
        for split, rows in (("train", train), ("test", test)):
            (tmp_path / f"{split}.csv").write_text("".join(
                f"{csv_field(to_number[c])},{title}{csv_field(t)}\n" for c, t in rows), encoding="utf-8")
        return str(tmp_path), ({"class_names": CLASSES} if name == "yelp" else {})
    if name == "csv":
        write_csv(tmp_path / "train.csv", train)
        write_csv(tmp_path / "test.csv", test)
        return str(tmp_path), {}
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "test.jsonl", test)
    return str(tmp_path), {}


@pytest.mark.parametrize("name", ["newsgroups20", "reuters8", "reuters52", "ag_news", "dbpedia", "yelp", "csv",
                                  "jsonl", "hf"])
def test_text_module_fraction_samples_per_class_and_disjoint_splits(tmp_path, name, request):
    if name == "hf":
        path, args = str(request.getfixturevalue("hf_folder")), {"text_column": "sentence"}
    else:
        path, args = _target_files(tmp_path, name)
    # ag_news and dbpedia have 4 and 14 classes: keep the three the files hold (classes= relabels)
    classes = [0, 1, 2] if name in ("ag_news", "dbpedia") else None
    common = dict(reader=partial(READERS[name], path, **args), max_len=12, val_fraction=0.25, classes=classes)
    full = TextDataModule(name, **common)
    full.setup()
    _assert_disjoint(full)
    n_classes = len(full.class_names)
    few = TextDataModule(name, samples_per_class=5, seed=2, **common)
    few.setup()
    assert torch.bincount(few.datasets["train"].tensors[1]).tolist() == [5] * n_classes
    again = TextDataModule(name, samples_per_class=5, seed=2, **common)
    again.setup()
    assert torch.equal(few.datasets["train"].tensors[1], again.datasets["train"].tensors[1])
    half = TextDataModule(name, fraction=0.5, seed=2, **common)
    half.setup()
    per_class = torch.bincount(half.datasets["train"].tensors[1])
    assert per_class.max() - per_class.min() <= 1 and sum(per_class) < full.sizes()["train"]
    assert half.sizes()["test"] == full.sizes()["test"] and half.sizes()["val"] == full.sizes()["val"]
    _assert_disjoint(half)


def test_a_class_only_in_test_stops_the_run(tmp_path):
    write_csv(tmp_path / "train.csv", rows_of(["a", "b"], 5))
    write_csv(tmp_path / "test.csv", rows_of(["a", "c"], 2, start=500))
    dm = TextDataModule("csv", reader=partial(READERS["csv"], str(tmp_path)))
    with pytest.raises(DataError, match=r"'csv': classes \['c'\] appear in test but not in train"):
        dm.setup()


def test_offline_without_data_names_dataset_path_and_fix(tmp_path):
    where = tmp_path / "data" / "ag_news_csv"
    with pytest.raises(DataError) as err:
        READERS["ag_news"](str(where))
    message = str(err.value)
    assert "'ag_news'" in message and str(where) in message and "ag_news_csv.tgz" in message
    assert "\n" not in message
    with pytest.raises(DataError, match=r"'csv': no path given; set target.reader.path="):
        READERS["csv"](None)


# -- configs ----------------------------------------------------------------------------------------------
def _data_configs() -> list[tuple[str, str, str]]:
    """(group, config file, data set name) for every data set config in conf/source and conf/target."""
    from xfer.argv import CONF_DIR

    same_data = {"mnist5k_digits": "mnist5k"}  # a second config of the same data set
    return [(group, f.stem, same_data.get(f.stem, f.stem))
            for group in ("source", "target") for f in sorted((CONF_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize("group, choice, name", _data_configs())
def test_config_names_a_reader_whose_arguments_fit(group, choice, name):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from xfer.argv import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", overrides=[f"{group}={choice}"], return_hydra_config=True)
    node = OmegaConf.to_container(cfg[group], resolve=True)
    reader = instantiate(cfg[group].reader, _convert_="all")  # a partial of the reader function
    assert callable(reader) and not any(isinstance(v, (DictConfig, ListConfig)) for v in reader.keywords.values())
    assert node["name"] == name and readers.label(reader) in readers.known()
    inspect.signature(readers.function(reader)).bind(*reader.args, **reader.keywords)
    # the data module takes the rest of the config, and hands the reader only what it takes
    dm = instantiate(cfg[group], seed=0, _convert_="all")
    assert readers.function(dm.reader) is readers.function(reader)
    inspect.signature(dm.reader).bind(**{k: getattr(dm, k) for k in dm.handed_to_reader
                                         if readers.takes(dm.reader, k)})
