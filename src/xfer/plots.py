"""PNG plots of a sweep summary: accuracy by strategy, against data size, the layer-transfer curve, and
learning curves read back from the runs' TensorBoard events."""
from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from xfer.report import Summary


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def _err(g) -> float:
    return 0.0 if math.isnan(g.ci95) else 100 * g.ci95


def plot_by_strategy(s: "Summary", folder: Path) -> Path | None:
    sizes = sorted({g.fraction for g in s.groups}, key=str)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(s.groups)), 4))
    width = 0.8 / len(sizes)
    labels = sorted({g.strategy for g in s.groups}, key=lambda l: -max(g.mean for g in s.groups if g.strategy == l))
    for j, size in enumerate(sizes):
        gs = {g.strategy: g for g in s.groups if g.fraction == size}
        xs = [i + j * width for i, l in enumerate(labels) if l in gs]
        ax.bar(xs, [100 * gs[l].mean for l in labels if l in gs], width,
               yerr=[_err(gs[l]) for l in labels if l in gs], capsize=3, label=f"data={size}")
        for x, l in zip(xs, [l for l in labels if l in gs]):
            for v in gs[l].values.values():
                ax.plot(x, 100 * v, "k.", ms=3)
    ax.set_xticks([i + width * (len(sizes) - 1) / 2 for i in range(len(labels))], labels, rotation=30, ha="right")
    ax.set_ylabel("target test accuracy (%)")
    ax.set_title("Accuracy by strategy (bars: mean, whiskers: 95% CI, dots: seeds)")
    lo = min(100 * v for g in s.groups for v in g.values.values())
    ax.set_ylim(max(0, lo - 5), None)
    if len(sizes) > 1:
        ax.legend(fontsize=8)
    path = folder / "accuracy_by_strategy.png"
    _save(fig, path)
    return path


def _line_plot(curves: dict[str, list[tuple[float, object]]], xlabel: str, title: str, path: Path) -> Path:
    """One line per label through (x, group) points, with 95% CI error bars."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in sorted(curves.items()):
        pts = sorted(pts, key=lambda p: p[0])
        ax.errorbar([x for x, _ in pts], [100 * g.mean for _, g in pts], yerr=[_err(g) for _, g in pts],
                    marker="o", capsize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("target test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)
    return path


def plot_by_fraction(s: "Summary", folder: Path) -> Path | None:
    numeric = [g for g in s.groups if isinstance(g.fraction, (int, float))]
    if len({g.fraction for g in numeric}) < 2:
        return None
    curves: dict[str, list[tuple[float, object]]] = defaultdict(list)
    for g in numeric:
        curves[g.strategy].append((g.fraction, g))
    return _line_plot(curves, "target.fraction (share of the training split)", "Accuracy against training data",
                      folder / "accuracy_by_fraction.png")


_K = re.compile(r"^(\w+)\((.*)\)")


def plot_layer_transfer(s: "Summary", folder: Path) -> Path | None:
    """Accuracy against k for every strategy whose label carries k (freeze_first_k, transfer_first_k)."""
    curves: dict[str, list[tuple[float, object]]] = defaultdict(list)
    for g in s.groups:
        m = _K.match(g.strategy)
        if not m:
            continue
        settings = [kv.strip() for kv in m.group(2).split(",")]
        k = next((kv[2:] for kv in settings if kv.startswith("k=")), None)
        if k is not None and k.isdigit():
            rest = ", ".join(kv for kv in settings if not kv.startswith("k="))
            curves[f"{m.group(1)}({rest})" if rest else m.group(1)].append((int(k), g))
    curves = {label: pts for label, pts in curves.items() if len(pts) > 1}
    if not curves:
        return None
    return _line_plot(curves, "k: trunk blocks transferred", "Layer transfer (Yosinski et al. 2014)",
                      folder / "layer_transfer.png")


def read_scalar(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its directory watcher chats at INFO

    events = run_dir / "tb" / "target"
    if not events.is_dir():
        return []
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def plot_learning_curves(s: "Summary", folder: Path, tag: str = "val/acc") -> Path | None:
    from xfer.report import _varying_settings, strategy_label

    varying = _varying_settings(s.runs)
    curves: dict[str, list[list[float]]] = defaultdict(list)
    for r in s.runs:
        points = read_scalar(Path(r["run_dir"]), tag)
        if points:
            curves[strategy_label(r, varying)].append([v for _, v in sorted(points)])
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in sorted(curves.items()):
        n = min(len(c) for c in runs)
        mean = [100 * sum(c[i] for c in runs) / len(runs) for i in range(n)]
        ax.plot(range(1, n + 1), mean, marker="o", label=f"{label} (n={len(runs)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{tag} (%)")
    ax.set_title("Learning curves (mean over seeds)")
    ax.legend(fontsize=8)
    path = folder / "learning_curves.png"
    _save(fig, path)
    return path


def write_plots(s: "Summary", folder: Path) -> list[Path]:
    made = [plot_by_strategy(s, folder), plot_by_fraction(s, folder), plot_layer_transfer(s, folder),
            plot_learning_curves(s, folder)]
    return [p for p in made if p is not None]


def confusion_figure(matrix, class_names: list[str]):
    """A confusion-matrix figure (rows: true class, columns: predicted), for TensorBoard's images tab."""
    m = matrix.detach().cpu().numpy() if hasattr(matrix, "detach") else matrix
    n = len(m)
    fig, ax = plt.subplots(figsize=(max(3, 0.45 * n + 1.5), max(3, 0.45 * n + 1.2)))
    ax.imshow(m, cmap="Blues")
    if n <= 25:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, int(m[i][j]), ha="center", va="center", fontsize=7,
                            color="white" if m[i][j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    return fig
