"""Stratified, seeded index arithmetic: splits and class-balanced subsets. Pure numpy, no data."""
from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train/val/test indices with each class split in the same proportions."""
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)  # type: ignore[return-value]


def split_off(labels: np.ndarray, idx: np.ndarray, fraction: float,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, held) with ``fraction`` of each class held out."""
    rest, held, _ = stratified_split(labels[idx], fraction, 0.0, seed)
    return idx[rest], idx[held]


def balanced_subset(labels: np.ndarray, idx: np.ndarray, seed: int, fraction: float = 1.0,
                    samples_per_class: int | None = None) -> np.ndarray:
    """A seeded subset of ``idx``: ``fraction`` of every class (at least one each), or exactly
    ``samples_per_class`` of every class. Raises if a class has fewer than that."""
    if samples_per_class is None and fraction >= 1.0:
        return idx
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(labels[idx]):
        members = rng.permutation(idx[labels[idx] == cls])
        if samples_per_class is not None:
            if len(members) < samples_per_class:
                raise ValueError(
                    f"samples_per_class={samples_per_class} but class {cls} has only {len(members)} "
                    f"training samples; allowed: 1..{len(members)}"
                )
            n = samples_per_class
        else:
            n = max(1, int(round(len(members) * fraction)))
        keep.append(members[:n])
    return np.sort(np.concatenate(keep))


def grouped_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train/val/test indices in which no group (a movie, an author, a patient) is in two
    splits, each split close to its share of every class.

    Groups are visited in a seeded random order and each goes, whole, to the split it brings closest
    to its per-class targets (the smallest rise of sum((count / target - 1)^2) over splits and
    classes), so the splits fill in proportion and a large group cannot overfill a small split
    when a better place exists."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    classes, y = np.unique(labels, return_inverse=True)
    keys, g = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(keys), len(classes)))
    np.add.at(counts, (g, y), 1)
    shares = np.array([1.0 - val_fraction - test_fraction, val_fraction, test_fraction])
    live = np.flatnonzero(shares > 0)
    target = shares[live, None] * counts.sum(axis=0)[None, :]  # [splits, classes]
    target = np.maximum(target, 1e-9)
    current = np.zeros_like(target)
    where = np.empty(len(keys), dtype=np.int64)
    for k in np.random.default_rng(seed).permutation(len(keys)):
        before = ((current / target - 1.0) ** 2).sum(axis=1)
        after = (((current + counts[k]) / target - 1.0) ** 2).sum(axis=1)
        best = int(np.argmin(after - before))
        current[best] += counts[k]
        where[k] = live[best]
    split_of = where[g]
    return tuple(np.flatnonzero(split_of == s).astype(np.int64) for s in range(3))  # type: ignore[return-value]


def grouped_split_off(labels: np.ndarray, groups: np.ndarray, idx: np.ndarray, fraction: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, held) with whole groups held out, about ``fraction`` of each class."""
    rest, held, _ = grouped_split(labels[idx], groups[idx], fraction, 0.0, seed)
    return idx[rest], idx[held]
