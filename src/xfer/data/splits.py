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
