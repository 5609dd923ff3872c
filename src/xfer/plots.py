"""The confusion-matrix figure a run logs to TensorBoard. Sweep figures live in xfer.report.plots."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
