"""The transferability report's files: transfer.json (everything), transfer.csv (one row per trunk and
depth), transfer.md (the table, what fed the trunk, the command) and transfer.png (each score per depth)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from xfer.analysis.transfer import SCORES, TOP_SCORES
from xfer.io import atomic_write_bytes, atomic_write_json

LABELS = {"logme": "LogME", "h_score": "H-score (regularised)", "knn_acc": "k-NN val acc",
          "probe_acc": "linear probe val acc", "leep": "LEEP", "nce": "NCE"}


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for v in report["variants"]:
        for d in v["depths"]:
            top = v["top"] if v["top"] is not None and d["depth"] == len(v["depths"]) else {}
            out.append({"trunk": v["name"], "depth": d["depth"], "block": d["block"], "dim": d["dim"],
                        **{k: d[k] for k in SCORES}, **{k: top.get(k) for k in TOP_SCORES}})
    return out


def to_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    table = rows(report)
    writer = csv.DictWriter(buf, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    return buf.getvalue()


def _num(x: Any) -> str:
    return "" if x is None else f"{x:.4g}"


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Transferability before fine-tuning: {report['experiment']} (seed {report['seed']})", "",
             f"Target {report['target']}: {report['n_train']} training examples scored, k-NN and probe accuracy on "
             f"{report['n_val']} val examples, {report['classes']} classes. Source: {report['source'] or 'none'}. "
             f"Depth k = the output of the first k trunk blocks (what `freeze_first_k` with `strategy.k=k` keeps).",
             "", "What fed each trunk:"]
    lines += [f"- {v['name']}: {v['feeding']}" for v in report["variants"]]
    head = ["trunk", "depth", "block", *[LABELS[k] for k in (*SCORES, *TOP_SCORES)]]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(report):
        lines.append("| " + " | ".join([r["trunk"], str(r["depth"]), r["block"],
                                        *[_num(r[k]) for k in (*SCORES, *TOP_SCORES)]]) + " |")
    lines += ["", "LogME and the H-score are computed on standardised training features; LEEP and NCE need the "
              "source head (same modality) and are given at the top depth only. These scores are priors to check "
              "against a sweep (`sweep=layers`), not verdicts: no score wins everywhere, and k-NN often does as well.",
              "", f"Reproduce: `{report.get('command', '')}` ({report['wall_s']:.1f} s)", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCORES), figsize=(4 * len(SCORES), 3.4))
    for ax, key in zip(axes, SCORES):
        for v in report["variants"]:
            ax.plot([d["depth"] for d in v["depths"]], [d[key] for d in v["depths"]], marker="o", label=v["name"])
        ax.set_xlabel("depth (trunk blocks)")
        ax.set_title(LABELS[key], fontsize=10)
        ax.set_xticks([d["depth"] for d in report["variants"][0]["depths"]])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report['experiment']}: transferability per depth, target {report['target']}, "
                 f"seed {report['seed']}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write(report: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "transfer.json", report)
    atomic_write_bytes(folder / "transfer.csv", to_csv(report).encode())
    atomic_write_bytes(folder / "transfer.md", to_markdown(report).encode())
    plot(report, folder / "transfer.png")
    return [folder / f"transfer.{ext}" for ext in ("json", "csv", "md", "png")]
