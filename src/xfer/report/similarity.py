"""Representation similarity across a sweep's runs: per group (strategy at a data size) and trunk block, how
far the fine-tuned trunk moved from its start (linear CKA, initial vs final, from each run's results.json),
how close it stays to the source model (source vs final), and how alike the seeds end up (CKA between the
final features of every pair of seeds, from each run's ``similarity/features.npz``).

Every run reads the same inputs (the first target val examples; the val split depends on split_seed alone),
so the numbers compare across the strategies of a sweep; pairs whose val examples differ are not compared.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xfer.analysis.scores import linear_cka
from xfer.report.collect import DIR
from xfer.report.summary import Group, Summary

FEATURES = "similarity/features.npz"


@dataclass
class GroupSimilarity:
    group: Group
    blocks: list[str]
    examples: int
    initial: list[list[float]] = field(default_factory=list)  # per run: CKA(start, final) per block
    source: list[list[float]] = field(default_factory=list)   # per run: CKA(source, final) per block
    cross_seed: list[list[float]] = field(default_factory=list)  # per pair of seeds: CKA per block
    source_note: str | None = None

    @staticmethod
    def _mean(rows: list[list[float]]) -> list[float] | None:
        return [float(v) for v in np.mean(rows, axis=0)] if rows else None

    @property
    def initial_mean(self) -> list[float] | None:
        return self._mean(self.initial)

    @property
    def source_mean(self) -> list[float] | None:
        return self._mean(self.source)

    @property
    def cross_mean(self) -> list[float] | None:
        return self._mean(self.cross_seed)

    @property
    def cross_min(self) -> list[float] | None:
        return [float(v) for v in np.min(self.cross_seed, axis=0)] if self.cross_seed else None


def _features(run: dict[str, Any], blocks: int) -> list[np.ndarray] | None:
    try:
        with np.load(Path(run[DIR]) / FEATURES) as npz:
            return [npz[f"block{i}"] for i in range(blocks)]
    except (OSError, KeyError, ValueError):
        return None


def collect(s: Summary) -> list[GroupSimilarity]:
    """Each group whose runs recorded their similarity."""
    out = []
    for g in s.groups:
        recorded = {u: r["target"]["similarity"] for u, r in sorted(g.runs.items())
                    if (r.get("target") or {}).get("similarity")}
        if not recorded:
            continue
        first = next(iter(recorded.values()))
        gs = GroupSimilarity(g, list(first["blocks"]), int(first["examples"]))
        same = {u: sim for u, sim in recorded.items()
                if sim["blocks"] == gs.blocks and sim["examples"] == gs.examples
                and sim.get("val_ids") == first.get("val_ids")}
        gs.initial = [sim["initial_vs_final"] for sim in same.values()]
        gs.source = [sim["source_vs_final"] for sim in same.values() if sim.get("source_vs_final")]
        gs.source_note = None if gs.source else first.get("source_note")
        feats = {u: f for u in same if (f := _features(g.runs[u], len(gs.blocks))) is not None}
        for a, b in itertools.combinations(sorted(feats), 2):
            gs.cross_seed.append([linear_cka(x, y) for x, y in zip(feats[a], feats[b])])
        out.append(gs)
    return out


def markdown(found: list[GroupSimilarity], plots: bool = True) -> str:
    """The section of summary.md; empty when no run recorded its similarity."""
    if not found:
        return ""
    blocks = max((gs.blocks for gs in found), key=len)
    head = ["group", "data", *[f"block {b.split(':')[0]}" for b in blocks]]
    sep = "|" + "---|" * len(head)
    lines = ["", "## Representation similarity per trunk block (linear CKA)", "",
             f"On the first {found[0].examples} target val examples, the same for every run (files: "
             f"<run>/similarity/cka.csv and cka.png). 1 = the same representation up to rotation and scale.", ""]
    for title, key, note in (
            ("What moved: the trunk at the start against the fine-tuned trunk (mean over seeds)", "initial_mean",
             "Low = the block changed; frozen blocks stay at 1."),
            ("Across seeds: the fine-tuned trunks of two seeds (mean over pairs; [min])", None,
             "Low = the seeds ended in different representations."),
            ("Source model against the fine-tuned target model (mean over seeds)", "source_mean",
             "Each through its own adapter, on the same target inputs.")):
        lines += [f"**{title}.** {note}", "", "| " + " | ".join(head) + " |", sep]
        empty = True
        for gs in found:
            if key is None:
                if not gs.cross_seed:
                    continue
                cells = [f"{m:.2f} [{lo:.2f}]" for m, lo in zip(gs.cross_mean, gs.cross_min)]
                label = f"{gs.group.short} ({len(gs.cross_seed)} pair{'' if len(gs.cross_seed) == 1 else 's'})"
            else:
                values = getattr(gs, key)
                if values is None:
                    continue
                n = len(gs.initial if key == "initial_mean" else gs.source)
                cells, label = [f"{v:.2f}" for v in values], f"{gs.group.short} (n={n})"
            empty = False
            lines.append("| " + " | ".join([label, str(gs.group.data), *cells]) + " |")
        if empty:
            lines.pop()
            lines.pop()
            reason = next((gs.source_note for gs in found if gs.source_note), None) if key == "source_mean" else None
            lines.append(f"({reason or 'no group has two seeds with saved features'})")
        lines.append("")
    if plots:
        lines += ["![linear CKA per trunk block: start vs fine-tuned, and seed vs seed](similarity.png)", ""]
    return "\n".join(lines)


def plot(found: list[GroupSimilarity], path: Path) -> Path | None:
    """similarity.png: CKA(start, final) and cross-seed CKA per block, one line per group."""
    if not found:
        return None
    from xfer.report.plots import _save  # first: it sets the Agg backend

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, title in ((axes[0], "initial_mean", "start vs fine-tuned (what moved)"),
                           (axes[1], "cross_mean", "seed vs seed (fine-tuned)")):
        for gs in found:
            values = getattr(gs, key)
            if values is not None:
                ax.plot(range(len(values)), values, marker="o", label=f"{gs.group.short} [{gs.group.data}]")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("trunk block")
        ax.set_ylabel("linear CKA")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(found[0].blocks)))
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    _save(fig, path)
    return path
