"""The statistics of a sweep summary, as pure functions of numbers (no files, no printing).

Every function here answers one question the summary asks of paired runs: how large is a difference
and how sure are we (paired t, exact sign-flip, McNemar, a hierarchical bootstrap), which claims
survive multiplicity (Holm), and how many seeds a clear answer would take (power). Degenerate inputs
(no spread, one unit) get an honest answer rather than a nan, a warning or a p of 0.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from xfer.report.settings import DEFAULT_ALPHA

# The level of every interval, whatever the summary's alpha (settings.DEFAULT_ALPHA): it is part of
# what the tables and plots label them (``95% CI``, ``ci95_low``).
CI_LEVEL = 0.95
SIGN_FLIP_MAX_N = 12  # the exact sign-flip p is reported beside the t-test up to this many units
SEEDS_MAX = 1000
_ENUMERATE_MAX_N = 16  # 2^16 sign patterns is the most we enumerate


@dataclass(frozen=True)
class PairedDiff:
    """A paired difference a - b over n units; ``p`` is the primary two-sided p-value (None: no test)."""

    n: int
    mean: float
    sd: float | None  # None for n=1
    ci_low: float | None
    ci_high: float | None
    p: float | None
    test: str  # how p was obtained
    p_sign_flip: float | None
    d_z: float | None


def _is_constant(d: np.ndarray) -> bool:
    """True when every difference is the same number, up to float noise (sums of accuracies)."""
    return bool(np.ptp(d) <= 1e-12 * max(1.0, float(np.max(np.abs(d)))))


def sign_flip_p(diffs: Sequence[float]) -> float | None:
    """Exact two-sided sign-flip permutation p: the share of the 2^n sign assignments whose |mean| is at
    least the observed |mean|. Exact for any n when the differences are constant (p = 2^(1-n)); otherwise
    up to 16 units, beyond which it returns None."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return None
    observed = abs(float(d.mean()))
    tol = 1e-12 * max(1.0, float(np.max(np.abs(d))))
    if observed <= tol:
        return 1.0
    if _is_constant(d):
        return min(1.0, 2.0 ** (1 - n))
    if n > _ENUMERATE_MAX_N:
        return None
    patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1  # every sign assignment
    means = np.abs(patterns @ d) / n
    return float(np.mean(means >= observed - tol))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDiff:
    """Mean, sd and 95% Student-t CI of a - b over paired units, and its two-sided p-value.

    No spread at all (a == b everywhere) gives p = 1 and CI [0, 0]. A constant non-zero difference has
    sd 0, where the t statistic is infinite and its p of 0 is a lie with 3 seeds: the exact sign-flip p
    is used instead (2/8 = 0.25 for n=3). One unit gives no t-test (see ``mcnemar_exact``).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = int(d.size)
    if n == 0:
        raise ValueError("paired_difference needs at least one pair")
    mean = float(d.mean())
    flip = sign_flip_p(d) if n <= SIGN_FLIP_MAX_N else None
    if n == 1:
        return PairedDiff(1, mean, None, None, None, None, "none (one unit)", None, None)
    if _is_constant(d):
        if abs(mean) <= 1e-12 * max(1.0, float(np.max(np.abs(d)))):
            return PairedDiff(n, 0.0, 0.0, 0.0, 0.0, 1.0, "none (identical)", 1.0, None)
        # no spread: the t-interval collapses to a point, which would claim certainty; give none
        flip = sign_flip_p(d)
        return PairedDiff(n, mean, 0.0, None, None, flip, "exact sign-flip (no spread)", flip, None)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    t_crit = float(stats.t.ppf(0.5 + CI_LEVEL / 2, n - 1))
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return PairedDiff(n, mean, sd, mean - t_crit * se, mean + t_crit * se, p, "paired t", flip, mean / sd)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values, in input order; None or nan entries stay None and are not part of
    the family. Adjusted values are monotone in the order of the raw ones and capped at 1."""
    family = [(p, i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    m = len(family)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(family)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar p for two classifiers on the same examples: a binomial test on the
    examples exactly one of them gets right. No such example: p = 1."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    k = only_a + only_b
    if k == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), k, 0.5)))


def bootstrap_diff(units: Sequence[tuple], n_boot: int = 2000, seed: int = 0,
                   level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile CI of the accuracy difference a - b from per-example predictions, by a two-level
    bootstrap: units (seed pairs) with replacement, then within each drawn unit its test examples with
    replacement, the same examples for both strategies.

    ``units``: per unit (labels, correct_a, correct_b[, groups]), aligned on the same test examples.
    Without groups the examples are drawn stratified by true class; resampling a class's examples only
    matters through how many drawn examples only a (or only b) got right, so each class contributes a
    multinomial draw of those counts (the same distribution as drawing indices, at a cost independent of
    the test-set size). With groups (a grouped split: the snippets of one movie are not independent) whole
    groups are drawn instead, so the interval reflects how few independent groups the test set holds.
    """
    if not units:
        raise ValueError("bootstrap_diff needs at least one unit")
    rng = np.random.default_rng(seed)
    k = len(units)
    # inner[u]: [n_boot, k] independent example-resampled differences of unit u, one per slot it may fill
    inner = np.empty((k, n_boot, k))
    for u, unit in enumerate(units):
        labels, ca, cb = (np.asarray(x) for x in unit[:3])
        groups = unit[3] if len(unit) > 3 else None
        d = ca.astype(np.int8) - cb.astype(np.int8)
        if groups is not None:
            _, g = np.unique(np.asarray(groups), return_inverse=True)
            d_sum = np.bincount(g, weights=d).astype(float)
            size = np.bincount(g).astype(float)
            picks = rng.integers(0, len(size), size=(n_boot, k, len(size)))
            inner[u] = d_sum[picks].sum(axis=2) / size[picks].sum(axis=2)
            continue
        total = np.zeros((n_boot, k))
        for c in np.unique(labels):
            dc = d[labels == c]
            probs = np.array([np.sum(dc == 1), np.sum(dc == -1), np.sum(dc == 0)], dtype=float) / dc.size
            counts = rng.multinomial(dc.size, probs, size=(n_boot, k))
            total += counts[..., 0] - counts[..., 1]
        inner[u] = total / d.size
    picks = rng.integers(0, k, size=(n_boot, k))  # which unit fills each slot of each replicate
    reps = inner[picks, np.arange(n_boot)[:, None], np.arange(k)[None, :]].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(reps, [tail, 100 - tail])
    return float(low), float(high)


def d_z(diffs: Sequence[float]) -> float | None:
    """Effect size of paired differences: mean / sd (None without spread or with one unit)."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2 or _is_constant(d):
        return None
    return float(d.mean() / d.std(ddof=1))


def paired_t_power(n: np.ndarray | int, delta: float, sd: float, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Power of a two-sided paired t-test with n units to detect a true mean difference ``delta``."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = delta / sd * np.sqrt(n)
    power = np.atleast_1d(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)).astype(float)
    bad = np.flatnonzero(np.isnan(power))
    if bad.size:
        # scipy's noncentral t returns nan in parts of its range (few df, a far tail): there, average
        # over the chi-square instead. T = (Z + ncp) / sqrt(W / df), so P(|T| > c) = E_W[Phi(ncp - c s) +
        # Phi(-ncp - c s)] with s = sqrt(W / df); W at 4,000 equal-probability quantiles (error < 1e-3).
        f, c, k = (np.broadcast_to(x, power.shape)[bad] for x in (df, crit, ncp))
        roots = np.stack([_chi2_roots(float(d)) for d in f])
        scale = c[:, None] * roots
        power[bad] = (special.ndtr(k[:, None] - scale) + special.ndtr(-k[:, None] - scale)).mean(axis=1)
    return power if np.ndim(n) else power[0]


@functools.lru_cache(maxsize=256)
def _chi2_roots(df: float) -> np.ndarray:
    """sqrt(W / df) at 4,000 equal-probability quantiles of a chi-square with ``df`` degrees of freedom."""
    q = (np.arange(4000) + 0.5) / 4000
    return np.sqrt(stats.chi2.ppf(q, df) / df)


def seeds_needed(sd: float | None, delta: float, alpha: float = DEFAULT_ALPHA, power: float = 0.8) -> int | str | None:
    """The smallest n (2..1000) at which a two-sided paired t-test at level ``alpha`` has ``power`` to
    detect a true difference ``delta``, given the sd of the paired differences; ">1000" beyond, None
    when the spread is unknown (one unit) or zero (nothing to plan from)."""
    if sd is None or not sd > 0 or not math.isfinite(sd):
        return None
    # the t-test never beats the z-test with known sd, so the z-test's n is a safe place to start looking
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    start = max(2, int(0.9 * (z * sd / delta) ** 2))
    if start > SEEDS_MAX:
        return f">{SEEDS_MAX}"
    with np.errstate(all="ignore"):
        width = 8  # the answer is usually within a few of the z-test's n: look close first, then wider
        while start <= SEEDS_MAX:
            n = np.arange(start, min(SEEDS_MAX, start + width - 1) + 1)
            hit = np.flatnonzero(paired_t_power(n, delta, sd, alpha) >= power)
            if hit.size:
                return int(n[hit[0]])
            start, width = int(n[-1]) + 1, 64
    return f">{SEEDS_MAX}"


def mean_sd_ci(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean, sd and 95% Student-t half-width of one group's values (sd and half-width None for n < 2)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, None, None
    mean = float(v.mean())
    if v.size < 2:
        return mean, None, None
    sd = float(v.std(ddof=1))
    return mean, sd, float(stats.t.ppf(0.5 + CI_LEVEL / 2, v.size - 1)) * sd / math.sqrt(v.size)
