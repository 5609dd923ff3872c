"""Transferability scores of fixed features, and linear CKA. Pure functions of arrays (numpy or torch),
computed in float64 with numpy (and scipy's L-BFGS-B for the linear probe), never importing torch: the
summary imports this module for CKA; each returns a Python float.
Bad input is a one-line ValueError naming the value and what is allowed."""
from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

_TINY = 1e-300
_ALPHA_CAP = 1e12


# -- input checks -----------------------------------------------------------------------------------
def _numpy(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):  # a tensor, without importing torch
        import torch

        x = x.detach().cpu()
        if x.is_floating_point() or x.is_complex():
            x = x.to(torch.float64)  # bfloat16 / float16 have no numpy dtype
        return x.numpy()
    return np.asarray(x)


def _array(x: Any, name: str, dims: int) -> np.ndarray:
    a = _numpy(x)
    if a.ndim != dims:
        raise ValueError(f"{name} has shape {a.shape}; allowed: a {dims}-D array")
    return a


def _int_labels(y: Any, n: int, name: str) -> np.ndarray:
    """Integer class indices >= 0, one per row of the features."""
    a = _array(y, name, 1)
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries for {n} rows of features; allowed: one per row")
    if a.dtype.kind == "b":
        a = a.astype(np.int64)
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            bad = a[~(np.isfinite(a) & (a == np.round(np.nan_to_num(a))))][0]
            raise ValueError(f"{name} are not integers (e.g. {bad!r}); allowed: integer class indices")
    elif a.dtype.kind not in "iu":
        raise ValueError(f"{name} have dtype {a.dtype}; allowed: integer class indices")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} hold {int(a.min())}; allowed: class indices >= 0")
    return a


def _labels(y: Any, n: int, name: str = "labels") -> np.ndarray:
    """As _int_labels, and at least 2 distinct classes."""
    a = _int_labels(y, n, name)
    k = len(np.unique(a))
    if k < 2:
        raise ValueError(f"{name} hold {k} distinct class; allowed: at least 2 classes")
    return a


def _features(x: Any, name: str = "features", min_rows: int = 2) -> np.ndarray:
    a = _array(x, name, 2)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} have dtype {a.dtype}; allowed: real numbers")
    a = a.astype(np.float64)
    if a.shape[0] < min_rows or a.shape[1] < 1:
        rows = "row" if min_rows == 1 else "rows"
        raise ValueError(f"{name} has shape {a.shape}; allowed: at least {min_rows} {rows} and 1 column")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values; allowed: finite numbers")
    return a


def _class_sums(codes: np.ndarray, x: np.ndarray, classes: int) -> np.ndarray:
    """[classes, d]: the sum of the rows of x in each class (codes in 0..classes-1), in O(n d)."""
    order = np.argsort(codes, kind="stable")
    present, starts = np.unique(codes[order], return_index=True)
    out = np.zeros((classes, x.shape[1]))
    out[present] = np.add.reduceat(x[order], starts, axis=0)
    return out


def _count(value: Any, name: str) -> int:
    """An integer >= 1 (a bool is not one)."""
    try:
        k = operator.index(value)
    except TypeError:
        k = None
    if k is None or isinstance(value, (bool, np.bool_)) or k < 1:
        raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
    return k


def _centre(a: np.ndarray) -> np.ndarray:
    """Column-centred copy; a constant column becomes exactly 0 (not the rounding error of its mean)."""
    c = a - a.mean(0)
    c[:, np.ptp(a, axis=0) == 0] = 0.0
    return c


# -- LogME ------------------------------------------------------------------------------------------
def logme(features: Any, labels: Any, max_iter: int = 100, tol: float = 1e-5) -> float:
    """LogME (You, Liu, Wang & Long, ICML 2021, "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning"). For each class c, the one-hot column y is modelled as y = F w + noise with
    w ~ N(0, alpha^-1 I_d) and noise precision beta; the log evidence

        L = n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 |F m - y|^2 - alpha/2 |m|^2 - 1/2 log det A,
        A = alpha I + beta F^T F,  m = beta A^-1 F^T y,

    is maximised by the paper's fixed point, gamma = sum_i beta s_i / (alpha + beta s_i),
    alpha = gamma / |m|^2, beta = (n - gamma) / |F m - y|^2, from alpha = beta = 1 until both change by
    < ``tol`` (relative) or after ``max_iter`` rounds. One thin SVD F = U diag(sv) V^T serves every
    class and round (s = sv^2: the eigenvalues of F^T F); when n < d the d - n zero eigenvalues of F^T F
    still enter log det A, as log alpha. Where y is best explained as noise alone (w = 0) the evidence
    rises towards a finite limit as alpha -> inf and the fixed point diverges; alpha then stops at
    1e12 beta max(s), within ~1e-12 of that limit. Returns the mean over classes of L / n; higher is
    better. The features are used as given, never standardised here: the caller decides (LogME is not
    invariant to the features' scale)."""
    f = _features(features)
    y = _labels(labels, f.shape[0])
    max_iter = _count(max_iter, "max_iter")
    if not (isinstance(tol, (int, float, np.floating)) and tol > 0):
        raise ValueError(f"tol={tol!r}; allowed: a number > 0")
    n, d = f.shape
    classes = np.unique(y)
    onehot = (y[:, None] == classes[None, :]).astype(np.float64)  # [n, C]
    u, sv, _ = np.linalg.svd(f, full_matrices=False)   # F = U diag(sv) V^T, U [n, r], r = min(n, d)
    s = sv ** 2                                          # the eigenvalues of F^T F (all but d - r zeros)
    s_max = float(s.max())
    zs = u.T @ onehot                                    # U^T y per class, [r, C]
    if n <= d:
        outside = np.zeros(len(classes))                 # U is square: y lies wholly in its span
    else:  # |y - U U^T y|^2, summed explicitly (|y|^2 - |U^T y|^2 would cancel when y is nearly in the span)
        outside = np.sum((onehot - u @ zs) ** 2, axis=0)
    total = 0.0
    for j in range(len(classes)):
        z, out = zs[:, j], float(outside[j])

        def stats(alpha: float, beta: float) -> tuple[float, float, float]:
            den = alpha + beta * s
            gamma = float(np.sum(beta * s / den))
            m2 = float(np.sum((beta * sv * z / den) ** 2))     # |m|^2, m = V diag(beta sv / den) z
            res = float(np.sum((alpha * z / den) ** 2)) + out  # |F m - y|^2
            return gamma, m2, res

        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            gamma, m2, res = stats(alpha, beta)
            # no signal to fit (F^T y = 0 or F = 0): alpha stays where it is
            new_alpha = gamma / m2 if gamma > 0 and m2 > _TINY else alpha
            new_alpha = min(new_alpha, _ALPHA_CAP * max(beta * s_max, 1.0))  # the w = 0 limit (docstring)
            new_beta = (n - gamma) / max(res, _TINY)
            done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        _, m2, res = stats(alpha, beta)
        logdet = float(np.sum(np.log(alpha + beta * s))) + (d - len(s)) * math.log(alpha)
        evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                    - beta / 2 * res - alpha / 2 * m2 - logdet / 2)
        total += evidence / n
    return float(total / len(classes))


# -- H-score ----------------------------------------------------------------------------------------
def ledoit_wolf_shrinkage(x: Any) -> float:
    """The Ledoit & Wolf (2004, "A well-conditioned estimator for large-dimensional covariance matrices",
    J. Multivariate Anal.) intensity rho = b^2 / d^2 for shrinking S = X^T X / n (X: the column-centred
    rows x_k) towards mu I, mu = tr(S)/p, with the normalised norm |A|^2 = tr(A A^T)/p:
    d^2 = |S - mu I|^2, b^2 = min(d^2, 1/n^2 sum_k |x_k x_k^T - S|^2); clipped to [0, 1] (1 when S = mu I)."""
    a = _centre(_features(x, "x"))
    n, p = a.shape
    s = a.T @ a / n
    mu = np.trace(s) / p
    d2 = float(np.sum((s - mu * np.eye(p)) ** 2)) / p
    if d2 <= 0.0:
        return 1.0
    # sum_k |x_k x_k^T - S|_F^2 = sum_k |x_k|^4 - n |S|_F^2, because sum_k x_k^T S x_k = n tr(S^2)
    b2 = float(np.sum(np.sum(a ** 2, axis=1) ** 2) - n * np.sum(s ** 2)) / (n ** 2 * p)
    b2 = min(b2, d2)
    return float(min(max(b2 / d2, 0.0), 1.0))


def h_score(features: Any, labels: Any, shrinkage: float | str = "ledoit_wolf") -> float:
    """The regularised H-score (Ibrahim, Ponomareva & Mazumder, ICLR 2023, "Newer is not always better:
    rethinking transferability metrics, their peculiarities, stability and performance"):

        H_a = tr( ((1 - a) S + a (tr(S)/d) I)^-1 (1 - a) S_z ),

    S the covariance of the centred features, S_z the covariance of the class-conditional means (each row
    replaced by its class's mean), a the Ledoit-Wolf intensity of the features (``"ledoit_wolf"``) or a
    given number in [0, 1]; a = 0 is the H-score of Bao et al. (ICIP 2019), tr(pinv(S) S_z). Higher is
    better. 0.0 when every feature is constant. (Both covariances use 1/n; the scale cancels.)"""
    f = _features(features)
    y = _labels(labels, f.shape[0])
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit_wolf":
            raise ValueError(f"shrinkage={shrinkage!r}; allowed: 'ledoit_wolf' or a number in [0, 1]")
        a = ledoit_wolf_shrinkage(f)
    else:
        try:
            a = float(shrinkage)
        except (TypeError, ValueError):
            raise ValueError(f"shrinkage={shrinkage!r}; allowed: 'ledoit_wolf' or a number in [0, 1]") from None
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"shrinkage={shrinkage!r}; allowed: 'ledoit_wolf' or a number in [0, 1]")
    f = _centre(f)
    n, d = f.shape
    cov = f.T @ f / n
    if np.trace(cov) <= 0.0:
        return 0.0
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    means = _class_sums(codes, f, len(classes)) / counts[:, None]
    cov_z = (means * (counts / n)[:, None]).T @ means  # = sum_c n_c/n mu_c mu_c^T
    if a == 0.0:
        return float(np.trace(np.linalg.pinv(cov, hermitian=True) @ cov_z))
    shrunk = (1 - a) * cov + a * np.trace(cov) / d * np.eye(d)
    return float(np.trace(np.linalg.solve(shrunk, (1 - a) * cov_z)))


# -- accuracies of simple classifiers on the features ------------------------------------------------
def _pair(train_x: Any, train_y: Any, val_x: Any, val_y: Any) -> tuple[np.ndarray, ...]:
    tx, vx = _features(train_x, "train_x"), _features(val_x, "val_x", min_rows=1)
    if tx.shape[1] != vx.shape[1]:
        raise ValueError(f"train_x has {tx.shape[1]} columns, val_x {vx.shape[1]}; allowed: the same features")
    ty = _labels(train_y, tx.shape[0], "train_y")
    vy = _int_labels(val_y, vx.shape[0], "val_y")
    return tx, ty, vx, vy


def knn_accuracy(train_x: Any, train_y: Any, val_x: Any, val_y: Any, k: int = 20, chunk: int = 1024) -> float:
    """Accuracy on val of a cosine-similarity k-NN classifier on fixed features (as the k-NN monitor of Wu
    et al., CVPR 2018, and Caron et al., ICCV 2021, but an unweighted vote): rows L2-normalised, each val
    row takes the majority class of its k most similar training rows, a tie going to the tied class with
    the larger summed similarity; k is clipped to the training set. ``chunk`` val rows at a time, so the
    similarity matrix is never larger than chunk x n_train."""
    tx, ty, vx, vy = _pair(train_x, train_y, val_x, val_y)
    k = min(_count(k, "k"), tx.shape[0])
    chunk = _count(chunk, "chunk")
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), _TINY)  # noqa: E731
    tx, vx = unit(tx), unit(vx)
    classes, codes = np.unique(ty, return_inverse=True)
    c = len(classes)
    correct = 0
    for start in range(0, vx.shape[0], chunk):
        sim = vx[start:start + chunk] @ tx.T                          # [b, n_train]
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]             # the k nearest, any order
        rows = np.arange(sim.shape[0])[:, None]
        flat = (rows * c + codes[top]).ravel()                        # (row, class) cells
        votes = np.bincount(flat, minlength=sim.shape[0] * c).reshape(-1, c)
        summed = np.bincount(flat, weights=sim[rows, top].ravel(), minlength=sim.shape[0] * c).reshape(-1, c)
        tied = votes == votes.max(1, keepdims=True)
        pred = classes[np.argmax(np.where(tied, summed, -np.inf), axis=1)]
        correct += int(np.sum(pred == vy[start:start + chunk]))
    return correct / vx.shape[0]


def linear_probe_accuracy(train_x: Any, train_y: Any, val_x: Any, val_y: Any, weight_decay: float = 1e-3,
                          max_iter: int = 200, seed: int = 0) -> float:
    """Accuracy on val of a linear probe (as in Kornblith, Shlens & Le, CVPR 2019, "Do Better ImageNet
    Models Transfer Better?"): multinomial logistic regression on the features standardised with the
    training mean and std, minimising mean cross-entropy + weight_decay/2 |W|^2 (bias not penalised)
    full batch with scipy's L-BFGS-B in float64 (the loss and its gradient in closed form), at most
    ``max_iter`` iterations, from a
    seeded initialisation: deterministic. The penalty is fixed, never tuned on these data. Only classes
    present in train_y can be predicted."""
    tx, ty, vx, vy = _pair(train_x, train_y, val_x, val_y)
    try:
        wd = float(weight_decay)
    except (TypeError, ValueError):
        wd = math.nan
    if not (math.isfinite(wd) and wd >= 0):
        raise ValueError(f"weight_decay={weight_decay!r}; allowed: a number >= 0")
    max_iter = _count(max_iter, "max_iter")
    mean, std = tx.mean(0), tx.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    classes, codes = np.unique(ty, return_inverse=True)
    from scipy.optimize import minimize

    x, v = (tx - mean) / std, (vx - mean) / std
    n, d, c = x.shape[0], x.shape[1], len(classes)
    onehot = np.eye(c)[codes]

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:  # in closed form
        w, b = theta[:d * c].reshape(d, c), theta[d * c:]
        logits = x @ w + b
        logp = logits - logits.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        residual = (np.exp(logp) - onehot) / n
        loss = -float((onehot * logp).sum()) / n + wd / 2 * float((w ** 2).sum())
        return loss, np.concatenate([(x.T @ residual + wd * w).ravel(), residual.sum(0)])

    start = np.concatenate([0.01 * np.random.default_rng(int(seed)).standard_normal(d * c), np.zeros(c)])
    theta = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                     options={"maxiter": max_iter, "gtol": 1e-6, "ftol": 1e-10}).x
    pred = classes[(v @ theta[:d * c].reshape(d, c) + theta[d * c:]).argmax(1)]
    return float(np.mean(pred == vy))


# -- scores through the source head -----------------------------------------------------------------
def _probs(source_probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _features(source_probs, "source_probs")
    if np.any(p < 0) or not np.allclose(p.sum(1), 1.0, rtol=0.0, atol=1e-3):
        raise ValueError("source_probs rows are not probabilities; allowed: rows >= 0 that sum to 1 (a softmax)")
    y = _labels(labels, p.shape[0])
    return p, np.unique(y, return_inverse=True)[1]


def leep(source_probs: Any, labels: Any) -> float:
    """LEEP (Nguyen, Hassner, Seeger & Archambeau, ICML 2020, "LEEP: A New Measure to Evaluate
    Transferability of Learned Representations"): with theta(x) [n, Z] the source head's softmax on the
    target rows, the empirical joint P(y, z) = 1/n sum_i theta_z(x_i) [y_i = y], P(y | z) = P(y, z)/P(z),
    LEEP = 1/n sum_i log sum_z P(y_i | z) theta_z(x_i). At most 0 (0: the source head decides y)."""
    p, y = _probs(source_probs, labels)
    n = p.shape[0]
    joint = _class_sums(y, p, int(y.max()) + 1) / n                      # P(y, z)
    cond = joint / np.maximum(joint.sum(0, keepdims=True), _TINY)         # P(y | z); 0 where P(z) = 0
    eep = np.sum(p * cond[y], axis=1)                                     # sum_z P(y_i | z) theta_z(x_i) > 0
    return float(np.mean(np.log(np.maximum(eep, _TINY))))


def nce(source_probs: Any, labels: Any) -> float:
    """NCE (Tran, Nguyen & Hassner, ICCV 2019, "Transferability and Hardness of Supervised Classification
    Tasks"): with z_i = argmax_z theta_z(x_i) (the first of a tie) the source head's hard label,
    NCE = -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z) over the empirical joint of the counts of (y_i, z_i).
    At most 0 (0: z decides y)."""
    p, y = _probs(source_probs, labels)
    z = p.argmax(1)
    joint = np.zeros((int(y.max()) + 1, p.shape[1]))
    np.add.at(joint, (y, z), 1.0)
    joint /= joint.sum()
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / np.maximum(pz, _TINY))[nz])))


# -- representation similarity ----------------------------------------------------------------------
def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (Kornblith, Norouzi, Lee & Hinton, ICML 2019, "Similarity of Neural Network
    Representations Revisited") of two representations X [n, d1], Y [n, d2] of the same n rows, with the
    columns centred: |Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F), in float64; computed as <K, L>_F / (|K|_F |L|_F)
    with the n x n Grams K = X X^T, L = Y Y^T when n < d1 + d2 (the same number, cheaper). In [0, 1];
    1 for the same representation up to rotation and isotropic scale. Returns 0.0, not NaN, when either
    side is constant over the rows (no variance to compare)."""
    a, b = _features(x, "x"), _features(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x has {a.shape[0]} rows, y {b.shape[0]}; allowed: the same rows (examples) in both")
    a, b = _centre(a), _centre(b)
    if not a.any() or not b.any():
        return 0.0
    if a.shape[0] < a.shape[1] + b.shape[1]:
        ka, kb = a @ a.T, b @ b.T
        cross, na, nb = np.sum(ka * kb), np.linalg.norm(ka), np.linalg.norm(kb)
    else:
        cross = np.linalg.norm(b.T @ a) ** 2
        na, nb = np.linalg.norm(a.T @ a), np.linalg.norm(b.T @ b)
    if na <= _TINY or nb <= _TINY:
        return 0.0
    return float(cross / (na * nb))
