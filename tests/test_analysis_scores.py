"""The diagnostics' maths against from-scratch references on synthetic features with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from xfer.analysis import scores as S


def _separable(n: int = 120, d: int = 8, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) * 0.1
    x[:, :classes] += 3.0 * np.eye(classes)[y]
    return x, y


def _noise(n: int = 120, d: int = 8, classes: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % classes


# -- LogME ------------------------------------------------------------------------------------------
def _brute_logme(f: np.ndarray, y: np.ndarray) -> float:
    """Max over (alpha, beta) of the explicit-matrix evidence, per class: a log grid, then a shrinking
    coordinate search."""
    out = []
    grid = np.logspace(-4, 4, 41)
    for c in np.unique(y):
        t = (y == c).astype(float)
        ev = lambda la, lb: S.log_evidence(f, t, math.exp(la), math.exp(lb))  # noqa: E731
        best = max(((ev(math.log(a), math.log(b)), math.log(a), math.log(b)) for a in grid for b in grid))
        _, la, lb = best
        step = 0.25
        while step > 1e-7:
            moved = False
            for da, db in ((step, 0), (-step, 0), (0, step), (0, -step)):
                v = ev(la + da, lb + db)
                if v > best[0]:
                    best, la, lb, moved = (v, la + da, lb + db), la + da, lb + db, True
            if not moved:
                step /= 2
        out.append(best[0] / len(t))
    return float(np.mean(out))


def test_logme_matches_a_brute_force_float64_evidence():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(40, 5))
    y = np.arange(40) % 3
    f[:, 0] += y  # some signal
    assert S.logme(f, y) == pytest.approx(_brute_logme(f, y), rel=1e-4)


def test_logme_with_more_features_than_examples_matches_brute_force():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(12, 20))
    y = np.arange(12) % 2
    assert S.logme(f, y) == pytest.approx(_brute_logme(f, y), rel=1e-4)


def test_separable_features_score_higher_than_noise():
    (xs, ys), (xn, yn) = _separable(), _noise()
    assert S.logme(xs, ys) > S.logme(xn, yn)
    assert S.h_score(xs, ys) > S.h_score(xn, yn)
    assert S.knn_accuracy(xs[:90], ys[:90], xs[90:], ys[90:]) > 0.95
    assert S.knn_accuracy(xn[:90], yn[:90], xn[90:], yn[90:]) < 0.6
    assert S.linear_probe_accuracy(xs[:90], ys[:90], xs[90:], ys[90:]) == 1.0
    assert S.linear_probe_accuracy(xn[:90], yn[:90], xn[90:], yn[90:]) < 0.6


def test_logme_and_h_score_do_not_depend_on_the_order_of_examples():
    x, y = _separable(seed=5)
    order = np.random.default_rng(0).permutation(len(y))
    assert S.logme(x[order], y[order]) == pytest.approx(S.logme(x, y), rel=1e-9)
    assert S.h_score(x[order], y[order]) == pytest.approx(S.h_score(x, y), rel=1e-9)


# -- H-score ----------------------------------------------------------------------------------------
def test_h_score_without_shrinkage_is_bao_et_al():
    x, y = _noise(n=60, d=4)
    f = x - x.mean(0)
    cov = f.T @ f / len(f)
    means = np.stack([f[y == c].mean(0) for c in y])
    cov_z = means.T @ means / len(f)
    assert S.h_score(x, y, shrinkage=0.0) == pytest.approx(float(np.trace(np.linalg.pinv(cov) @ cov_z)), rel=1e-9)


def test_ledoit_wolf_intensity_is_the_2004_formula():
    x = np.random.default_rng(7).normal(size=(30, 6)) @ np.diag([1, 2, 3, 1, 1, 5])
    a = x - x.mean(0)
    n, d = a.shape
    s = a.T @ a / n
    mu = np.trace(s) / d
    d2 = np.linalg.norm(s - mu * np.eye(d)) ** 2 / d
    b2 = min(sum(np.linalg.norm(np.outer(r, r) - s) ** 2 for r in a) / n ** 2 / d, d2)
    got = S.ledoit_wolf_shrinkage(x)
    assert 0.0 <= got <= 1.0 and got == pytest.approx(b2 / d2, rel=1e-9)
    shrunk = (1 - got) * s + got * mu * np.eye(d)
    means = np.stack([a[yy == c].mean(0) for yy in [np.arange(n) % 2] for c in yy])
    expected = np.trace(np.linalg.solve(shrunk, (1 - got) * means.T @ means / n))
    assert S.h_score(x, np.arange(n) % 2) == pytest.approx(float(expected), rel=1e-9)


# -- LEEP and NCE -----------------------------------------------------------------------------------
def test_leep_and_nce_on_a_hand_computed_case():
    # 4 examples, 2 source classes z, 2 target classes y. theta rows: (1,0), (1,0), (0,1), (0.5,0.5);
    # y = 0, 1, 1, 1. Joint P(y,z) = 1/4 * [[1, 0], [1.5, 1.5]]; P(z) = (2.5/4, 1.5/4);
    # P(y|z): z0: (0.4, 0.6), z1: (0, 1).
    # LEEP = 1/4 [log 0.4 + log 0.6 + log 1 + log(0.5*0.6 + 0.5*1)] = 1/4 [log 0.4 + log 0.6 + log 0.8]
    p = np.array([[1, 0], [1, 0], [0, 1], [0.5, 0.5]])
    y = np.array([0, 1, 1, 1])
    assert S.leep(p, y) == pytest.approx((math.log(0.4) + math.log(0.6) + math.log(0.8)) / 4, rel=1e-12)
    # hard z = 0, 0, 1, 0 (argmax takes the first of a tie): joint counts y0z0=1, y1z0=2, y1z1=1;
    # -H(Y|Z) = 1/4 log(1/3) + 2/4 log(2/3) + 1/4 log 1
    assert S.nce(p, y) == pytest.approx(math.log(1 / 3) / 4 + math.log(2 / 3) / 2, rel=1e-12)


def test_leep_is_zero_when_the_source_determines_the_labels_and_lower_for_random_probs():
    y = np.arange(50) % 5
    exact = np.eye(5)[(y + 2) % 5]  # a relabelling: each source class is one target class
    assert S.leep(exact, y) == pytest.approx(0.0, abs=1e-12) and S.nce(exact, y) == pytest.approx(0.0, abs=1e-12)
    rand = np.random.default_rng(0).dirichlet(np.ones(5), size=50)
    assert S.leep(rand, y) < -0.5 and S.nce(rand, y) < -0.5


# -- linear CKA -------------------------------------------------------------------------------------
def test_linear_cka_is_one_for_identical_and_invariant_to_rotation_and_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    y = np.tanh(x @ rng.normal(size=(10, 6)))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert S.linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert S.linear_cka(x @ q, y) == pytest.approx(S.linear_cka(x, y), rel=1e-9)
    assert S.linear_cka(3.7 * x, 0.2 * y) == pytest.approx(S.linear_cka(x, y), rel=1e-9)
    assert S.linear_cka(x, y) == pytest.approx(S.linear_cka(y, x), rel=1e-12)


def test_linear_cka_is_near_zero_for_independent_features():
    rng = np.random.default_rng(1)
    assert S.linear_cka(rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))) < 0.05


def test_linear_cka_gram_form_equals_the_feature_form():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 30)), rng.normal(size=(8, 5))  # n < d: the Gram form
    a, b = x - x.mean(0), y - y.mean(0)
    feature_form = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    assert S.linear_cka(x, y) == pytest.approx(feature_form, rel=1e-9)
    assert S.linear_cka(np.ones((8, 3)), y) == 0.0


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, words", [
    (lambda: S.logme(np.zeros((5, 2)), [0, 1, 0]), "3 entries for 5 rows"),
    (lambda: S.logme(np.ones((4, 2)), [0, 0, 0, 0]), "at least 2 classes"),
    (lambda: S.h_score(np.ones((4, 2)), [0.5, 1, 0, 1]), "not integers"),
    (lambda: S.h_score(np.ones((4, 2)), [0, 1, 0, 1], shrinkage=2), "shrinkage=2"),
    (lambda: S.knn_accuracy(np.ones((4, 2)), [0, 1, 0, 1], np.ones((3, 3)), [0, 1, 0]), "the same features"),
    (lambda: S.linear_probe_accuracy(np.ones((4, 2)), [0, 1, 0, 1], np.ones((2, 2)), [0, 1], -1), "weight_decay"),
    (lambda: S.leep(np.ones((4, 2)), [0, 1, 0, 1]), "not probabilities"),
    (lambda: S.nce(np.eye(2)[[0, 1, 0]], [0, 1]), "2 entries for 3 rows"),
    (lambda: S.linear_cka(np.ones((4, 2)), np.ones((5, 2))), "same examples"),
    (lambda: S.linear_cka(np.ones(4), np.ones((4, 2))), "2-D array"),
])
def test_bad_input_is_one_line(call, words: str):
    with pytest.raises(ValueError) as err:
        call()
    assert words in str(err.value) and "\n" not in str(err.value)
