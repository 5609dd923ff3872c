"""PNG figures of a sweep summary: each group's test accuracy with its CI and seeds, each group's paired
difference from the reference, accuracy against data size, the difference from the reference against the
number of labelled target examples (when transfer pays), the layer-transfer curve, and learning curves
read back from the runs' TensorBoard events (one panel per data size)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
import numpy as np  # noqa: E402

from xfer.report.collect import DIR  # noqa: E402
from xfer.report.labels import split_k  # noqa: E402
from xfer.report.settings import METRICS  # noqa: E402
from xfer.report.summary import Group, Summary, transfer_gain  # noqa: E402


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def _err(g: Group) -> float:
    return 0.0 if g.ci95 is None else 100 * g.ci95


def _panels(n: int, rows: int, width: float = 5.5):
    fig, axes = plt.subplots(1, n, figsize=(width * n, max(2.5, 0.4 * rows + 1.5)), squeeze=False)
    return fig, list(axes[0])


def plot_by_strategy(s: Summary, folder: Path) -> Path | None:
    """Per data size, each group's mean test accuracy with its 95% t-CI and every unit's dot; a lone dot
    (labelled n=1) where one run leaves no interval. No bars: a bar on a cut axis exaggerates gaps."""
    sizes = [size for size in s.sizes if any(g.n for g in s.groups if g.data == size)]
    if not sizes:
        return None
    rows = max(sum(1 for g in s.groups if g.data == size and g.n) for size in sizes)
    fig, axes = _panels(len(sizes), rows)
    rng = np.random.default_rng(0)  # jitter only
    for ax, size in zip(axes, sizes):
        members = sorted((g for g in s.groups if g.data == size and g.n), key=lambda g: g.mean)
        for y, g in enumerate(members):
            vals = 100 * np.array(list(g.values.values()))
            ax.plot(vals, y + rng.uniform(-0.12, 0.12, vals.size), ".", color="0.55", ms=4, zorder=1)
            if g.n == 1:
                ax.plot(100 * g.mean, y, "o", color="C1", zorder=2)
                ax.annotate("n=1", (100 * g.mean, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
            else:
                ax.errorbar(100 * g.mean, y, xerr=_err(g), fmt="o", color="C0", capsize=3, zorder=2)
        lo, hi = ax.get_xlim()
        ax.set_xlim(max(lo, 0.0), min(hi, 100.0))  # a t-interval of 2 runs can reach past 0-100%
        ax.set_yticks(range(len(members)), [g.strategy for g in members], fontsize=8)
        ax.set_xlabel(f"target {METRICS[s.metric]} (%)")
        ax.set_title(f"data={size}", fontsize=9)
    fig.suptitle(f"{_cap(METRICS[s.metric])} by group (dot: mean, whiskers: 95% CI, grey: units)", fontsize=10,
                 y=1.02)
    path = folder / "accuracy_by_strategy.png"
    _save(fig, path)
    return path


def plot_differences(s: Summary, folder: Path) -> Path | None:
    """Per data size, each group's paired difference from the reference (points) with its 95% t-CI; Holm-
    significant ones filled red. A group from another experiment (a text-native baseline) is a dashed line
    at its difference, the yardstick the transfer strategies are read against."""
    sizes = [size for size in s.sizes if size in s.references
             and any(c.data == size and c.reference is s.references[size] for c in s.comparisons)]
    if not sizes:
        return None
    rows = max(sum(1 for c in s.comparisons if c.data == size) for size in sizes)
    fig, axes = _panels(len(sizes), rows, width=6)
    for ax, size in zip(axes, sizes):
        ref = s.references[size]
        here = [c for c in s.comparisons if c.data == size and c.reference is ref]  # contrasts: table only
        other = [c for c in here if c.group.experiment and ref.experiment and c.group.experiment != ref.experiment]
        dots = sorted((c for c in here if c not in other), key=lambda c: c.diff.mean)
        for y, c in enumerate(dots):
            x = 100 * c.diff.mean
            if c.diff.ci_low is not None:
                ax.errorbar(x, y, xerr=[[x - 100 * c.diff.ci_low], [100 * c.diff.ci_high - x]], fmt="none",
                            ecolor="C3" if c.significant else "C0", capsize=3)
            elif c.boot is not None:  # no t-interval (one unit, no spread): the bootstrap's, in grey
                ax.errorbar(x, y, xerr=[[x - 100 * c.boot[0]], [100 * c.boot[1] - x]], fmt="none", ecolor="0.6",
                            capsize=2, ls="--")
            ax.plot(x, y, "o", color="C3" if c.significant else "C0", mfc="C3" if c.significant else "white")
            if c.n == 1:
                ax.annotate("n=1", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
        for c in other:
            ax.axvline(100 * c.diff.mean, ls="--", color="C2", lw=1)
            ax.annotate(c.group.strategy, (100 * c.diff.mean, max(len(dots) - 0.5, 0)), rotation=90, fontsize=7,
                        color="C2", ha="right", va="top")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(dots)), [c.group.strategy for c in dots], fontsize=8)
        ax.set_ylim(-0.7, max(len(dots), 1) - 0.3)
        ax.set_xlabel(f"difference from {ref.strategy} ({s.score} points)")
        ax.set_title(f"data={size}", fontsize=9)
    fig.suptitle(f"Paired difference from the reference (95% t-CI, grey: bootstrap; red: Holm p < {s.alpha:g}, "
                 f"m={s.m})", fontsize=10, y=1.02)
    path = folder / "difference_from_reference.png"
    _save(fig, path)
    return path


def plot_transfer_gain(s: Summary, folder: Path) -> Path | None:
    """Each strategy's paired difference from the reference (points, 95% t-CI) against the labelled target
    examples on a log axis: where a line sits below 0 transfer hurts, where it crosses 0 it starts to pay.
    Only for sweeps over data size (summary.transfer_gain gives the points)."""
    curves = transfer_gain(s)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, pts in sorted(curves.items()):
        x = [n for n, _ in pts]
        y = [100 * c.diff.mean for _, c in pts]
        err = [[0.0, 0.0] if c.diff.ci_low is None else [m - 100 * c.diff.ci_low, 100 * c.diff.ci_high - m]
               for m, (_, c) in zip(y, pts)]
        ax.errorbar(x, y, yerr=np.array(err).T, marker="o", capsize=3, label=label)
        for n, m, (_, c) in zip(x, y, pts):
            if c.diff.ci_low is None:  # one unit or no spread: no interval to draw, say so
                ax.annotate(f"n={c.n}, no CI", (n, m), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ticks = sorted({n for pts in curves.values() for n, _ in pts})  # the sizes run, as plain counts
    ax.set_xticks(ticks, [f"{n:g}" for n in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled target examples (log scale)")
    ax.set_ylabel(f"difference ({s.score} points)")
    refs = ", ".join(sorted({c.reference.strategy for pts in curves.values() for _, c in pts}))
    ax.set_title(f"difference from {refs}, paired seeds, 95% CI", fontsize=10)
    ax.legend(fontsize=8)
    path = folder / "transfer_gain.png"
    _save(fig, path)
    return path


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _line_plot(curves: dict[str, list[tuple[float, Group]]], xlabel: str, title: str, path: Path,
               ylabel: str) -> Path:
    """One line per label through (x, group) points, with 95% CI error bars (none for n=1)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in sorted(curves.items()):
        pts = sorted(pts, key=lambda p: p[0])
        ax.errorbar([x for x, _ in pts], [100 * g.mean for _, g in pts], yerr=[_err(g) for _, g in pts],
                    marker="o", capsize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)
    return path


def plot_by_fraction(s: Summary, folder: Path) -> Path | None:
    numeric = [g for g in s.groups if g.n and isinstance(g.data, (int, float))]
    if len({g.data for g in numeric}) < 2:
        return None
    curves: dict[str, list[tuple[float, Group]]] = defaultdict(list)
    for g in numeric:
        curves[g.strategy].append((g.data, g))
    return _line_plot(curves, "target.fraction (share of the training split)",
                      f"{_cap(s.score)} against training data", folder / "accuracy_by_fraction.png",
                      f"target {METRICS[s.metric]} (%)")


def plot_layer_transfer(s: Summary, folder: Path) -> Path | None:
    """Accuracy against k for every strategy whose label carries k (freeze_first_k, transfer_first_k)."""
    curves = _layer_curves(s)
    if not curves:
        return None
    return _line_plot(curves, "k: trunk blocks transferred", "Layer transfer (Yosinski et al. 2014)",
                      folder / "layer_transfer.png", f"target {METRICS[s.metric]} (%)")


def _layer_curves(s: Summary) -> dict[str, list[tuple[float, Group]]]:
    several = len({g.data for g in s.groups}) > 1
    curves: dict[str, list[tuple[float, Group]]] = defaultdict(list)
    for g in s.groups:
        found = split_k(g.strategy)
        if found and g.n:
            label, k = found
            curves[f"{label} data={g.data}" if several else label].append((k, g))
    return {label: pts for label, pts in curves.items() if len(pts) > 1}


def plot_layers_with_scores(s: Summary, reports: dict[int, dict[str, Any]], path: Path) -> Path | None:
    """Yosinski's curves (accuracy against k, one line per family and experiment: AnB, AnB+, BnB, BnB+) on
    the left; on the right, what the cheap scores said of the same depths before any training: the k-NN and
    linear-probe accuracy of the source-trained trunk (solid) and of its random control (dashed), mean over
    the seeds' reports. None without layer curves."""
    curves = _layer_curves(s)
    if not curves:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for label, pts in sorted(curves.items()):
        pts = sorted(pts, key=lambda p: p[0])
        left.errorbar([x for x, _ in pts], [100 * g.mean for _, g in pts], yerr=[_err(g) for _, g in pts],
                      marker="o", capsize=3, label=label)
    left.set(xlabel="k: trunk blocks transferred", ylabel=f"target {METRICS[s.metric]} (%)",
             title="Layer transfer (Yosinski et al. 2014)")
    left.legend(fontsize=7)
    seeds = sorted(reports)
    if seeds:
        for v, variant in enumerate(reports[seeds[0]]["variants"]):
            depths = [d["depth"] for d in variant["depths"]]
            style = "--" if variant["name"] == "random" else "-"
            for key, name in (("knn_acc", "k-NN"), ("probe_acc", "linear probe")):
                means = [100 * float(np.mean([reports[sd]["variants"][v]["depths"][i][key] for sd in seeds]))
                         for i in range(len(depths))]
                right.plot(depths, means, style, marker="o", label=f"{name}, {variant['name']} trunk")
        right.set(xlabel="depth k: blocks read", ylabel="score (% of target val)",
                  title=f"Transferability scores per depth (mean of {len(seeds)} seeds)")
        right.legend(fontsize=7)
    else:
        right.set_axis_off()
        right.text(0.5, 0.5, "no transferability reports in this sweep", ha="center", va="center")
    _save(fig, path)
    return path


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


def runs_by_size(s: Summary) -> dict[Any, dict[str, list[dict[str, Any]]]]:
    """data size -> group label -> its runs: one learning-curve panel per data size, never mixed."""
    out: dict[Any, dict[str, list[dict[str, Any]]]] = {}
    for size in s.sizes:
        panel = {g.strategy: [g.runs[u] for u in g.units] for g in s.groups if g.data == size and g.n}
        if panel:
            out[size] = panel
    return out


def plot_learning_curves(s: Summary, folder: Path, tag: str = "val/acc") -> Path | None:
    panels: dict[Any, dict[str, list[list[float]]]] = {}
    for size, groups in runs_by_size(s).items():
        for label, runs in groups.items():
            for r in runs:
                points = read_scalar(Path(r[DIR]), tag)
                if points:
                    panels.setdefault(size, {}).setdefault(label, []).append([v for _, v in sorted(points)])
    if not panels:
        return None
    fig, axes = _panels(len(panels), 8, width=5)
    for ax, (size, curves) in zip(axes, panels.items()):
        for label, runs in sorted(curves.items()):
            n = min(len(c) for c in runs)
            mean = 100 * np.mean([c[:n] for c in runs], axis=0)
            ax.plot(range(1, n + 1), mean, marker="o", label=f"{label} (n={len(runs)})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{tag} (%)")
        ax.set_title(f"data={size}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Learning curves (mean over units)", fontsize=10, y=1.02)
    path = folder / "learning_curves.png"
    _save(fig, path)
    return path


def write_plots(s: Summary, folder: Path) -> list[Path]:
    made = [plot_by_strategy(s, folder), plot_differences(s, folder), plot_transfer_gain(s, folder),
            plot_by_fraction(s, folder), plot_layer_transfer(s, folder), plot_learning_curves(s, folder)]
    return [p for p in made if p is not None]
