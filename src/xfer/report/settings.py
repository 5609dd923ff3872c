"""The sweep summary's settings and their defaults, each stated once: ``summarize`` and ``write_summary``,
the flags of scripts/summarize.py and the sweep callback (``xfer.hydra_callbacks.SummarizeSweep``) all
start from these. The sweep callback's own values are stated in conf/hydra/default.yaml
(``hydra.callbacks.summarize``), where a run changes them; a test keeps that file equal to the defaults here.

Light to import (no numpy, no plotting): an entry point reads and checks its settings before the
statistics load.
"""
from __future__ import annotations

from typing import Any

from xfer.errors import ReportError

DEFAULT_REFERENCE = "scratch"
# Planned contrasts beyond "every group vs the reference", each "A:B" (A minus B), made wherever both
# groups exist and Holm-corrected with the rest. linear_probe vs frozen_random is the frozen-random-trunk
# control: it separates what pretraining gives from what freezing gives.
DEFAULT_CONTRASTS = ("linear_probe:frozen_random",)
# Significant: a Holm-adjusted p below alpha. The intervals stay 95% whatever alpha is (stats.CI_LEVEL).
DEFAULT_ALPHA = 0.05
# The test scores a run's results.json records (TransferModule logs test/acc and test/f1), and how the
# summary names them. Accuracy is also what predictions.npz scores: the bootstrap and McNemar's test
# resample it.
ACCURACY = "test/acc"
METRICS: dict[str, str] = {ACCURACY: "test accuracy", "test/f1": "test macro-F1"}
DEFAULT_METRIC = ACCURACY


def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """``alpha`` as a float, or ReportError (one line, naming the setting as ``name``)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ReportError(f"{name}={alpha}; allowed: a number with 0 < alpha < 1 (the significance level of "
                          f"Holm-adjusted p-values, default {DEFAULT_ALPHA})")
    return float(alpha)


def check_metric(metric: Any, name: str = "metric") -> str:
    """``metric`` when it is one of METRICS, else ReportError (one line, naming the setting as ``name``)."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise ReportError(f"{name}={metric}; allowed: {', '.join(METRICS)} (the test scores a run's results.json "
                          f"has, default {DEFAULT_METRIC})")
    return metric
