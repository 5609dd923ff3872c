"""The seeds a run derives from ``seed``, stated once.

Every training epoch starts from ``epoch_seed(seed, epoch)`` (callbacks.EpochSeed, and the plain loop
of the benchmark), so dropout and any other randomness do not depend on what ran before and a resumed
run ends with the same weights as an uninterrupted one. ``MAX_SEED`` keeps that seed within 32 bits
(NumPy's limit) for any realistic number of epochs.
"""
from __future__ import annotations

EPOCH_STRIDE = 1009  # a prime: (seed, epoch) pairs never collide for epoch < EPOCH_STRIDE
MAX_SEED = 4_000_000  # 4_000_000 * 1009 + epoch < 2**32


def epoch_seed(seed: int, epoch: int) -> int:
    return int(seed) * EPOCH_STRIDE + int(epoch)
