"""Transferability scores of fixed features, and linear CKA. Pure functions of arrays (numpy or torch),
computed in float64; each returns a float. Bad input is a one-line ValueError."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def _array(x: Any, name: str, dims: int) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != dims:
        raise ValueError(f"{name} has shape {a.shape}; allowed: a {dims}-D array")
    return a


def _labels(y: Any, n: int, name: str = "labels") -> np.ndarray:
    a = _array(y, name, 1)
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries for {n} rows of features; allowed: one per row")
    if a.size and not np.all(np.equal(np.mod(a, 1), 0)):
        raise ValueError(f"{name} are not integers (first: {a.ravel()[0]!r}); allowed: class indices")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} hold {a.min()}; allowed: class indices >= 0")
    if len(np.unique(a)) < 2:
        raise ValueError(f"{name} hold {len(np.unique(a))} class; allowed: at least 2 classes")
    return a


def _features(x: Any, name: str = "features") -> np.ndarray:
    a = _array(x, name, 2).astype(np.float64)
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise ValueError(f"{name} has shape {a.shape}; allowed: at least 2 rows and 1 column")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values; allowed: finite numbers")
    return a


def log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence of y = f w + noise, w ~ N(0, alpha^-1 I), noise precision beta (You et al. 2021,
    eq. 2), with explicit matrices: the reference the fixed point is checked against."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    return float(n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                 - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * np.sum(m ** 2) - logdet / 2)


def logme(features: Any, labels: Any, max_iter: int = 100, tol: float = 1e-5) -> float:
    """LogME (You et al., ICML 2021): for each class's one-hot column y_c, the maximum over (alpha, beta) of
    the log evidence of a Bayesian linear model on the features, by the paper's fixed point
    (gamma = sum beta s/(alpha + beta s); alpha = gamma/|m|^2; beta = (n - gamma)/|f m - y|^2, with s the
    eigenvalues of f^T f from one SVD), divided by n and averaged over classes. Higher is better. The
    features are used as given (the caller standardises them or not)."""
    f = _features(features)
    y = _labels(labels, f.shape[0])
    n, d = f.shape
    u, sv, _ = np.linalg.svd(f, full_matrices=False)  # f = u diag(sv) vt; rank r = len(sv) <= min(n, d)
    s = sv ** 2
    total = 0.0
    classes = np.unique(y)
    for c in classes:
        t = (y == c).astype(np.float64)
        z = u.T @ t                    # t's coordinates in the column space of f
        resid_out = float(t @ t - z @ z)  # the part of t no weight vector can fit
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            w = beta * s / (alpha + beta * s)
            gamma = float(w.sum())
            m2 = float(np.sum((beta * sv / (alpha + beta * s) * z) ** 2))  # |m|^2
            res = float(np.sum((alpha / (alpha + beta * s) * z) ** 2)) + resid_out  # |f m - t|^2
            new_alpha, new_beta = gamma / max(m2, 1e-300), (n - gamma) / max(res, 1e-300)
            done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        m2 = float(np.sum((beta * sv / (alpha + beta * s) * z) ** 2))
        res = float(np.sum((alpha / (alpha + beta * s) * z) ** 2)) + resid_out
        logdet = float(np.sum(np.log(alpha + beta * s)) + (d - len(s)) * math.log(alpha))
        evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                    - beta / 2 * res - alpha / 2 * m2 - logdet / 2)
        total += evidence / n
    return total / len(classes)


def ledoit_wolf_shrinkage(x: Any) -> float:
    """The Ledoit-Wolf (2004) intensity for shrinking the covariance of centred ``x`` towards
    (tr(S)/d) I, clipped to [0, 1]."""
    a = _features(x, "x")
    a = a - a.mean(0)
    n, d = a.shape
    s = a.T @ a / n
    mu = np.trace(s) / d
    delta = np.sum((s - mu * np.eye(d)) ** 2) / d
    # sum_i |x_i x_i^T - S|_F^2 = sum_i |x_i|^4 - n |S|_F^2, since sum_i x_i^T S x_i = n |S|_F^2
    beta_bar = (np.sum(np.sum(a ** 2, axis=1) ** 2) - n * np.sum(s ** 2)) / (n ** 2 * d)
    beta_bar = min(beta_bar, delta)
    if delta <= 0:
        return 1.0
    return float(min(max(beta_bar / delta, 0.0), 1.0))


def h_score(features: Any, labels: Any, shrinkage: float | str = "ledoit_wolf") -> float:
    """The regularised H-score (Ibrahim, Ponomareva & Mazumder, ICLR 2023): tr(S_a^-1 (1 - a) S_z) with S
    the features' covariance, S_a = (1 - a) S + a (tr(S)/d) I its shrunk estimate, S_z the covariance of the
    class-conditional means; a: the Ledoit-Wolf intensity, or a given number in [0, 1] (0: the H-score of
    Bao et al. 2019, with a pseudo-inverse). Higher is better."""
    f = _features(features)
    y = _labels(labels, f.shape[0])
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit_wolf":
            raise ValueError(f"shrinkage={shrinkage!r}; allowed: 'ledoit_wolf' or a number in [0, 1]")
        a = ledoit_wolf_shrinkage(f)
    else:
        a = float(shrinkage)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"shrinkage={shrinkage!r}; allowed: 'ledoit_wolf' or a number in [0, 1]")
    f = f - f.mean(0)
    n, d = f.shape
    cov = f.T @ f / n
    means = np.zeros_like(f)
    for c in np.unique(y):
        means[y == c] = f[y == c].mean(0)
    cov_z = means.T @ means / n
    if a == 0.0:
        return float(np.trace(np.linalg.pinv(cov, hermitian=True) @ cov_z))
    shrunk = (1 - a) * cov + a * np.trace(cov) / d * np.eye(d)
    return float(np.trace(np.linalg.solve(shrunk, (1 - a) * cov_z)))


def _pair(train_x: Any, train_y: Any, val_x: Any, val_y: Any) -> tuple[np.ndarray, ...]:
    tx, vx = _features(train_x, "train_x"), _features(val_x, "val_x")
    if tx.shape[1] != vx.shape[1]:
        raise ValueError(f"train_x has {tx.shape[1]} columns, val_x {vx.shape[1]}; allowed: the same features")
    ty = _labels(train_y, tx.shape[0], "train_y")
    vy = _array(val_y, "val_y", 1).astype(np.int64)
    if vy.shape[0] != vx.shape[0]:
        raise ValueError(f"val_y has {vy.shape[0]} entries for {vx.shape[0]} rows of val_x; allowed: one per row")
    return tx, ty, vx, vy


def knn_accuracy(train_x: Any, train_y: Any, val_x: Any, val_y: Any, k: int = 20, chunk: int = 1024) -> float:
    """Accuracy on val of a cosine-similarity k-NN vote over the training features (k clipped to the
    training set; ties go to the class with the larger summed similarity)."""
    tx, ty, vx, vy = _pair(train_x, train_y, val_x, val_y)
    if int(k) < 1:
        raise ValueError(f"k={k}; allowed: an integer >= 1")
    k = min(int(k), tx.shape[0])
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    tx, vx = unit(tx), unit(vx)
    classes = int(max(ty.max(), vy.max())) + 1
    correct = 0
    for start in range(0, vx.shape[0], chunk):
        sim = vx[start:start + chunk] @ tx.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        votes = np.zeros((sim.shape[0], classes))
        weight = np.zeros((sim.shape[0], classes))
        rows = np.arange(sim.shape[0])[:, None]
        np.add.at(votes, (rows, ty[top]), 1.0)
        np.add.at(weight, (rows, ty[top]), sim[rows, top])
        pred = np.argmax(votes + 1e-6 * (weight - weight.min(1, keepdims=True)) / (k + 1.0), axis=1)
        correct += int(np.sum(pred == vy[start:start + chunk]))
    return correct / vx.shape[0]


def linear_probe_accuracy(train_x: Any, train_y: Any, val_x: Any, val_y: Any, weight_decay: float = 1e-3,
                          max_iter: int = 200, seed: int = 0) -> float:
    """Accuracy on val of multinomial logistic regression on the training features (standardised with
    the training mean and std), full batch, L-BFGS in float64, a fixed L2 penalty (never tuned here)."""
    tx, ty, vx, vy = _pair(train_x, train_y, val_x, val_y)
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay}; allowed: a number >= 0")
    mean, std = tx.mean(0), tx.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    x = torch.as_tensor((tx - mean) / std)
    v = torch.as_tensor((vx - mean) / std)
    y = torch.as_tensor(ty)
    classes = int(max(ty.max(), vy.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    w = (0.01 * torch.randn(x.shape[1], classes, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay / 2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((v @ w + b).argmax(1).numpy() == vy).mean())


def _joint(source_probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _features(source_probs, "source_probs")
    if np.any(p < 0) or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("source_probs rows are not probabilities; allowed: rows >= 0 that sum to 1 (a softmax)")
    return p, _labels(labels, p.shape[0])


def leep(source_probs: Any, labels: Any) -> float:
    """LEEP (Nguyen et al., ICML 2020): with theta(x) the source head's softmax over source classes z, the
    empirical joint P(y, z) = 1/n sum_i theta_z(x_i) [y_i = y] and P(y | z) = P(y, z) / P(z),
    LEEP = 1/n sum_i log sum_z P(y_i | z) theta_z(x_i). At most 0; higher is better."""
    p, y = _joint(source_probs, labels)
    n = p.shape[0]
    onehot = np.eye(int(y.max()) + 1)[y]
    joint = onehot.T @ p / n                          # [Y, Z]
    cond = joint / np.maximum(joint.sum(0, keepdims=True), 1e-300)  # P(y | z)
    return float(np.mean(np.log(np.maximum(np.sum(p * cond[y], axis=1), 1e-300))))


def nce(source_probs: Any, labels: Any) -> float:
    """NCE (Tran, Nguyen & Hassner, ICCV 2019): -H(Y | Z) of the empirical joint of the target labels y and
    the source head's hard predictions z = argmax theta(x). At most 0; higher is better."""
    p, y = _joint(source_probs, labels)
    z = p.argmax(1)
    joint = np.zeros((int(y.max()) + 1, p.shape[1]))
    np.add.at(joint, (y, z), 1.0)
    joint /= joint.sum()
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / np.maximum(pz, 1e-300))[nz])))


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (Kornblith et al., ICML 2019) of two representations of the same n examples:
    |Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F) on column-centred X [n, d1], Y [n, d2] (the n x n Gram form when
    n is the smaller side). 0.0 when either side is constant (no variance to compare)."""
    a, b = _features(x, "x"), _features(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x has {a.shape[0]} rows, y {b.shape[0]}; allowed: the same examples in both")
    a, b = a - a.mean(0), b - b.mean(0)
    if a.shape[0] < a.shape[1] + b.shape[1]:
        ka, kb = a @ a.T, b @ b.T
        cross, na, nb = np.sum(ka * kb), np.linalg.norm(ka), np.linalg.norm(kb)
    else:
        cross = np.linalg.norm(b.T @ a) ** 2
        na, nb = np.linalg.norm(a.T @ a), np.linalg.norm(b.T @ b)
    if na <= 1e-300 or nb <= 1e-300:
        return 0.0
    return float(cross / (na * nb))
