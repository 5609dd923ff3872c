"""The diagnostics' maths (xfer.analysis.scores) against from-scratch references on synthetic features
with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xfer.analysis import scores as S


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These problems are tiny: torch's thread pool only adds overhead (and contention on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _separable(n: int = 120, d: int = 8, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) * 0.1
    x[:, :classes] += 3.0 * np.eye(classes)[y]
    return x, y


def _noise(n: int = 120, d: int = 8, classes: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % classes


def test_separable_features_score_higher_than_noise():
    (xs, ys), (xn, yn) = _separable(), _noise()
    assert S.logme(xs, ys) > S.logme(xn, yn) + 0.5
    assert S.h_score(xs, ys) > 1.5 and S.h_score(xs, ys, 0.0) > 1.5  # at most C - 1 = 2
    assert S.h_score(xn, yn, 0.0) < 0.2
    assert S.h_score(xn, yn) < 0.2  # isotropic noise: Ledoit-Wolf shrinks fully, H = 0
    assert S.knn_accuracy(xs[:90], ys[:90], xs[90:], ys[90:]) == 1.0
    assert S.knn_accuracy(xn[:90], yn[:90], xn[90:], yn[90:]) < 0.6
    assert S.linear_probe_accuracy(xs[:90], ys[:90], xs[90:], ys[90:]) == 1.0
    assert S.linear_probe_accuracy(xn[:90], yn[:90], xn[90:], yn[90:]) < 0.6


def test_logme_and_h_score_do_not_depend_on_the_order_of_examples():
    x, y = _separable(seed=5)
    x = x + np.random.default_rng(9).normal(size=x.shape)  # not too easy
    order = np.random.default_rng(0).permutation(len(y))
    assert S.logme(x[order], y[order]) == pytest.approx(S.logme(x, y), rel=1e-9)
    assert S.h_score(x[order], y[order]) == pytest.approx(S.h_score(x, y), rel=1e-9)
    assert S.h_score(x[order], y[order], 0.0) == pytest.approx(S.h_score(x, y, 0.0), rel=1e-9)


# -- LogME ------------------------------------------------------------------------------------------
def _evidence(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence of t = f w + noise, w ~ N(0, alpha^-1 I), noise precision beta (You et al. 2021),
    with explicit matrices."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    sign, logdet = np.linalg.slogdet(a)
    assert sign > 0
    return float(n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                 - beta / 2 * np.sum((f @ m - t) ** 2) - alpha / 2 * np.sum(m ** 2) - logdet / 2)


def _nelder_mead(fun, x0: np.ndarray, step: float = 0.1, iters: int = 2000, tol: float = 1e-13) -> np.ndarray:
    """Minimise fun from x0: the textbook Nelder-Mead (reflect 1, expand 2, contract 1/2, shrink 1/2)."""
    pts = [x0] + [x0 + step * e for e in np.eye(len(x0))]
    vals = [fun(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) <= tol * (1 + abs(vals[0])):
            break
        centroid = np.mean(pts[:-1], axis=0)
        refl = centroid + (centroid - pts[-1])
        fr = fun(refl)
        if fr < vals[0]:
            exp = centroid + 2 * (centroid - pts[-1])
            fe = fun(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = centroid + 0.5 * (pts[-1] - centroid)
            fc = fun(con)
            if fc < vals[-1]:
                pts[-1], vals[-1] = con, fc
            else:
                pts = [pts[0] + 0.5 * (p - pts[0]) for p in pts]
                vals = [fun(p) for p in pts]
    return pts[int(np.argmin(vals))]


def _brute_logme(f: np.ndarray, y: np.ndarray, log10_beta: tuple[float, float] = (-6, 6)) -> float:
    """Per class: the max over (alpha, beta) of the explicit evidence, by a log-spaced grid (alpha in
    [1e-6, 1e14], beta in 10^log10_beta) and then Nelder-Mead in (log alpha, log beta); L/n averaged over
    classes. A class whose target is best explained as noise alone (w = 0) has its supremum at
    alpha -> inf, a plateau the top of the alpha grid reaches to ~1e-12."""
    grid_a = np.linspace(-6, 14, 81) * math.log(10)
    grid_b = np.linspace(*log10_beta, 49) * math.log(10)
    out = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        neg = lambda p: -_evidence(f, t, math.exp(p[0]), math.exp(p[1]))  # noqa: E731
        vals = np.array([[neg((la, lb)) for lb in grid_b] for la in grid_a])
        i, j = np.unravel_index(np.argmin(vals), vals.shape)
        assert 0 < i and 0 < j < len(grid_b) - 1, "the grid does not bracket the maximum"
        if i == len(grid_a) - 1:  # the alpha -> inf plateau: flat to 1e-9 over the last decade
            assert abs(vals[i, j] - vals[i - 4, j]) < 1e-9 * abs(vals[i, j])
        # the evidence can have a local maximum beside the plateau, sharp in beta: refine from the best
        # grid point of every alpha row, not only the overall best
        starts = [(grid_a[r], grid_b[int(np.argmin(vals[r]))]) for r in range(len(grid_a))]
        best = max(-neg(_nelder_mead(neg, np.array(st))) for st in starts[::4] + [(grid_a[i], grid_b[j])])
        out.append(best / len(t))
    return float(np.mean(out))


def _assert_logme_is_the_max(f: np.ndarray, y: np.ndarray, rel: float = 1e-4, **kw) -> None:
    got, brute = S.logme(f, y), _brute_logme(f, y, **kw)
    assert got <= brute + 1e-9 * abs(brute)  # logme is an evidence at some (alpha, beta): never above the max
    assert got == pytest.approx(brute, rel=rel)


def test_logme_matches_a_brute_force_float64_evidence():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(40, 5))
    y = np.arange(40) % 3
    f[:, 0] += y  # some signal
    _assert_logme_is_the_max(f, y)
    assert S.logme(torch.as_tensor(f, dtype=torch.float32), torch.as_tensor(y)) == pytest.approx(
        S.logme(f.astype(np.float32), y), rel=1e-12)


def test_logme_with_more_features_than_examples_matches_brute_force():
    # n < d: F^T F has d - n zero eigenvalues, which still count in log det A through alpha
    rng = np.random.default_rng(4)
    f = rng.normal(size=(12, 20))
    y = np.arange(12) % 2
    _assert_logme_is_the_max(f, y)


def test_logme_with_rank_deficient_features_matches_brute_force():
    rng = np.random.default_rng(5)
    f = rng.normal(size=(30, 4))
    y = np.arange(30) % 3
    f[:, 1] += y
    f = np.hstack([f, f[:, :2] + f[:, 2:3]])  # rank 4 of 6 columns, n > d
    _assert_logme_is_the_max(f, y)


def test_logme_keeps_its_precision_when_the_features_nearly_determine_the_labels():
    # noise 1e-6: beta ~ 1e12 and |F m - y|^2 ~ 1e-10 |y|^2, where |y|^2 - |U^T y|^2 would lose ~1e-5
    y = np.arange(60) % 3
    f = 3.0 * np.eye(3)[y] + 1e-6 * np.random.default_rng(6).normal(size=(60, 3))
    _assert_logme_is_the_max(f, y, rel=1e-8, log10_beta=(4, 16))


# -- H-score ----------------------------------------------------------------------------------------
def _cov_and_cov_z(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = x - x.mean(0)
    means = np.stack([f[y == c].mean(0) for c in y])  # each row replaced by its class mean
    return f.T @ f / len(f), means.T @ means / len(f)


def test_h_score_without_shrinkage_is_bao_et_al():
    x, y = _noise(n=60, d=4)
    x[:, 0] += 0.5 * y
    cov, cov_z = _cov_and_cov_z(x, y)
    assert S.h_score(x, y, shrinkage=0.0) == pytest.approx(float(np.trace(np.linalg.pinv(cov) @ cov_z)), rel=1e-9)
    # a singular covariance (a duplicated column): the pseudo-inverse
    x2 = np.hstack([x, x[:, :1]])
    cov, cov_z = _cov_and_cov_z(x2, y)
    assert S.h_score(x2, y, shrinkage=0) == pytest.approx(float(np.trace(np.linalg.pinv(cov) @ cov_z)), rel=1e-6)


def _direct_ledoit_wolf(x: np.ndarray) -> float:
    """Ledoit & Wolf (2004), lemma 3.2-3.4 as written: <A, B> = tr(A B^T)/p; m = <S, I>;
    d^2 = |S - m I|^2; b^2 = min(d^2, 1/n^2 sum_k |x_k x_k^T - S|^2); rho = b^2 / d^2."""
    a = x - x.mean(0)
    n, p = a.shape
    s = a.T @ a / n
    norm2 = lambda m: np.trace(m @ m.T) / p  # noqa: E731
    m = np.trace(s @ np.eye(p)) / p
    d2 = norm2(s - m * np.eye(p))
    b2 = min(sum(norm2(np.outer(r, r) - s) for r in a) / n ** 2, d2)
    return float(b2 / d2)


@pytest.mark.parametrize("n, scales", [(30, [1, 2, 3, 1, 1, 5]), (10, [1] * 15), (200, [1, 1, 1, 1])])
def test_ledoit_wolf_intensity_is_the_2004_formula(n: int, scales: list[float]):
    x = np.random.default_rng(7).normal(size=(n, len(scales))) @ np.diag(scales) + 4.0
    got = S.ledoit_wolf_shrinkage(x)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(_direct_ledoit_wolf(x), rel=1e-9)


def test_h_score_with_ledoit_wolf_is_the_shrunk_formula():
    x = np.random.default_rng(8).normal(size=(30, 6)) @ np.diag([1, 2, 3, 1, 1, 5])
    y = np.arange(30) % 3
    x[:, 2] += y
    a = _direct_ledoit_wolf(x)
    assert 0.0 < a < 1.0
    cov, cov_z = _cov_and_cov_z(x, y)
    shrunk = (1 - a) * cov + a * np.trace(cov) / 6 * np.eye(6)
    expected = float(np.trace(np.linalg.inv(shrunk) @ ((1 - a) * cov_z)))
    assert S.h_score(x, y) == pytest.approx(expected, rel=1e-9)
    for fixed in (0.3, 1.0):
        shrunk = (1 - fixed) * cov + fixed * np.trace(cov) / 6 * np.eye(6)
        expected = float(np.trace(np.linalg.inv(shrunk) @ ((1 - fixed) * cov_z)))
        assert S.h_score(x, y, shrinkage=fixed) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert S.h_score(np.full((7, 3), 0.1), np.arange(7) % 2) == 0.0  # constant features: no information


# -- k-NN and linear probe --------------------------------------------------------------------------
def test_knn_breaks_a_tied_vote_by_summed_similarity_and_clips_k():
    angle = lambda deg: [math.cos(math.radians(deg)), math.sin(math.radians(deg))]  # noqa: E731
    # val at 0 deg; class 1 at 10 and 80 deg (sum cos 1.158), class 0 at 20 and 30 deg (sum cos 1.806)
    train = np.array([angle(10), angle(80), angle(20), angle(30)]) * [[1], [5], [0.2], [3]]  # norms do not matter
    ty = np.array([1, 1, 0, 0])
    assert S.knn_accuracy(train, ty, np.array([angle(0)]), [0], k=4) == 1.0
    ty_swapped = np.array([0, 0, 1, 1])  # the tie goes by similarity, not by class index
    assert S.knn_accuracy(train, ty_swapped, np.array([angle(0)]), [1], k=4) == 1.0
    assert S.knn_accuracy(train, ty, np.array([angle(0)]), [1], k=1) == 1.0  # nearest is 10 deg
    # k larger than the training set: the whole set votes, 3 of class 0 against 2
    tx = np.array([angle(0), angle(5), angle(90), angle(95), angle(100)])
    assert S.knn_accuracy(tx, [1, 1, 0, 0, 0], np.array([angle(0), angle(2)]), [0, 0], k=1000) == 1.0


def test_knn_chunks_do_not_change_the_answer():
    x, y = _noise(n=300, d=6, classes=4, seed=3)
    x[:, 0] += y
    whole = S.knn_accuracy(x[:200], y[:200], x[200:], y[200:], k=7)
    assert S.knn_accuracy(x[:200], y[:200], x[200:], y[200:], k=7, chunk=13) == whole
    assert 0.3 < whole < 1.0


def test_linear_probe_is_deterministic_and_works_under_no_grad():
    x, y = _noise(n=200, d=6, classes=3, seed=4)
    x[:, 1] += 1.5 * y
    first = S.linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:])
    with torch.no_grad():
        assert S.linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:]) == first
    with torch.inference_mode():
        assert S.linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:]) == first
    assert 0.45 < first < 1.0  # chance: 1/3
    # labels need not be 0..C-1: only their identity matters
    assert S.linear_probe_accuracy(x[:150], 10 * y[:150] + 3, x[150:], 10 * y[150:] + 3) == first
    assert S.knn_accuracy(x[:150], 10 * y[:150] + 3, x[150:], 10 * y[150:] + 3) == S.knn_accuracy(
        x[:150], y[:150], x[150:], y[150:])


# -- LEEP and NCE -----------------------------------------------------------------------------------
def test_leep_and_nce_on_a_hand_computed_case():
    # 4 examples, 2 source classes z, 2 target classes y. theta rows: (1,0), (1,0), (0,1), (0.75,0.25);
    # y = 0, 1, 1, 1.
    # n P(y, z): y0: (1, 0); y1: (1 + 0.75, 1 + 0.25) = (1.75, 1.25). n P(z) = (2.75, 1.25).
    # P(y | z0) = (1/2.75, 1.75/2.75) = (4/11, 7/11); P(y | z1) = (0, 1).
    # per row sum_z P(y_i | z) theta_z: 4/11, 7/11, 1, 0.75 * 7/11 + 0.25 * 1 = 8/11.
    # LEEP = 1/4 [log(4/11) + log(7/11) + log 1 + log(8/11)]
    p = np.array([[1, 0], [1, 0], [0, 1], [0.75, 0.25]])
    y = np.array([0, 1, 1, 1])
    expected = (math.log(4 / 11) + math.log(7 / 11) + math.log(8 / 11)) / 4
    assert S.leep(p, y) == pytest.approx(expected, rel=1e-12)
    # NCE: z = argmax = 0, 0, 1, 0. Counts (y, z): (0,0) 1, (1,0) 2, (1,1) 1; P(y | z0) = (1/3, 2/3),
    # P(y1 | z1) = 1. -H(Y|Z) = sum P(y, z) log P(y | z) = 1/4 log(1/3) + 2/4 log(2/3) + 1/4 log 1
    assert S.nce(p, y) == pytest.approx(math.log(1 / 3) / 4 + math.log(2 / 3) / 2, rel=1e-12)
    # that case is symmetric (-H(Z|Y) is the same number); one that is not: y = 0, 1, 1, 0.
    # Counts: (0,0) 2, (1,0) 1, (1,1) 1; P(z) = (3/4, 1/4); P(y | z0) = (2/3, 1/3), P(y1 | z1) = 1.
    # -H(Y|Z) = 2/4 log(2/3) + 1/4 log(1/3) + 1/4 log 1  (while -H(Z|Y) = 1/2 log(1/2))
    assert S.nce(p, [0, 1, 1, 0]) == pytest.approx(math.log(2 / 3) / 2 + math.log(1 / 3) / 4, rel=1e-12)
    # the labels' names do not matter, nor float32 torch probabilities
    assert S.leep(torch.tensor(p, dtype=torch.float32), torch.tensor([5, 9, 9, 9])) == pytest.approx(expected, rel=1e-6)


def test_leep_is_zero_when_the_source_determines_the_labels_and_lower_for_random_probs():
    y = np.arange(50) % 5
    exact = np.eye(7)[(y + 2) % 5]  # a relabelling: each used source class is one target class
    assert S.leep(exact, y) == pytest.approx(0.0, abs=1e-12) and S.nce(exact, y) == pytest.approx(0.0, abs=1e-12)
    rand = np.random.default_rng(0).dirichlet(np.ones(5), size=50)
    assert S.leep(rand, y) < -0.5 and S.nce(rand, y) < -0.5
    assert S.leep(rand, y) < S.leep(exact, y) and S.nce(rand, y) < S.nce(exact, y)


# -- linear CKA -------------------------------------------------------------------------------------
def test_linear_cka_is_one_for_identical_and_invariant_to_rotation_and_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    y = np.tanh(x @ rng.normal(size=(10, 6))) + 0.3 * rng.normal(size=(200, 6))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    q6, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    base = S.linear_cka(x, y)
    assert 0.1 < base < 0.99
    assert S.linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert S.linear_cka(x, x @ q * 2.5 + 7.0) == pytest.approx(1.0, rel=1e-12)
    assert S.linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert S.linear_cka(x, y @ q6) == pytest.approx(base, rel=1e-9)
    assert S.linear_cka(3.7 * x, y) == pytest.approx(base, rel=1e-9)
    assert S.linear_cka(x, 0.2 * y) == pytest.approx(base, rel=1e-9)
    assert S.linear_cka(y, x) == pytest.approx(base, rel=1e-12)
    assert S.linear_cka(torch.as_tensor(x), torch.as_tensor(y)) == pytest.approx(base, rel=1e-12)


def test_linear_cka_is_near_zero_for_independent_features():
    rng = np.random.default_rng(1)
    assert S.linear_cka(rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))) < 0.05


def test_linear_cka_gram_form_equals_the_feature_form():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 30)), rng.normal(size=(8, 5))  # n < d1 + d2: the Gram form
    a, b = x - x.mean(0), y - y.mean(0)
    feature_form = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    k, l_ = a @ a.T, b @ b.T
    gram_form = np.sum(k * l_) / (np.linalg.norm(k) * np.linalg.norm(l_))
    assert gram_form == pytest.approx(feature_form, rel=1e-9)
    assert S.linear_cka(x, y) == pytest.approx(feature_form, rel=1e-9)
    assert S.linear_cka(np.vstack([x] * 5), np.vstack([y] * 5)) == pytest.approx(feature_form, rel=1e-9)  # n = 40
    # a constant side: 0.0, not NaN, also when the mean of the constant is not exact in floating point
    assert S.linear_cka(np.ones((8, 3)), y) == 0.0
    assert S.linear_cka(np.full((7, 3), 0.1), y[:7]) == 0.0
    assert S.linear_cka(y[:7], np.full((7, 40), 0.7)) == 0.0


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, words", [
    (lambda: S.logme(np.zeros((5, 2)), [0, 1, 0]), "3 entries for 5 rows"),
    (lambda: S.logme(np.ones((4, 2)), [0, 0, 0, 0]), "at least 2 classes"),
    (lambda: S.logme(np.ones((4, 2)), ["a", "b", "a", "b"]), "integer class indices"),
    (lambda: S.h_score(np.ones((4, 2)), [0.5, 1, 0, 1]), "not integers"),
    (lambda: S.h_score(np.ones((4, 2)), [0, 1, 0, 1], shrinkage=2), "shrinkage=2"),
    (lambda: S.h_score(np.ones((4, 2)), [0, 1, 0, 1], shrinkage="oas"), "'ledoit_wolf' or a number"),
    (lambda: S.knn_accuracy(np.ones((4, 2)), [0, 1, 0, 1], np.ones((3, 3)), [0, 1, 0]), "the same features"),
    (lambda: S.knn_accuracy(np.ones((4, 2)), [0, 1, 0, 1], np.ones((3, 2)), [0, 1, 0], k=0), "k=0"),
    (lambda: S.linear_probe_accuracy(np.ones((4, 2)), [0, 1, 0, 1], np.ones((2, 2)), [0, 1], -1), "weight_decay"),
    (lambda: S.linear_probe_accuracy(np.ones((4, 2)), [0, 1, 0, 1], np.ones((2, 2)), [0, -1]), "class indices >= 0"),
    (lambda: S.leep(np.ones((4, 2)), [0, 1, 0, 1]), "not probabilities"),
    (lambda: S.leep(np.eye(2)[[0, 1, 0, 1]], [[0, 1, 0, 1]]), "1-D array"),
    (lambda: S.nce(np.eye(2)[[0, 1, 0]], [0, 1]), "2 entries for 3 rows"),
    (lambda: S.nce(np.eye(2)[[0, 1, 0]], [0, 1, np.nan]), "not integers"),
    (lambda: S.linear_cka(np.ones((4, 2)), np.ones((5, 2))), "4 rows, y 5"),
    (lambda: S.linear_cka(np.ones(4), np.ones((4, 2))), "2-D array"),
    (lambda: S.linear_cka(np.array([[1.0, np.inf], [0, 1]]), np.ones((2, 2))), "non-finite"),
])
def test_bad_input_is_one_line(call, words: str):
    with pytest.raises(ValueError) as err:
        call()
    assert words in str(err.value) and "\n" not in str(err.value)
