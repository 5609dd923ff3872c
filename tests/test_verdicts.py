"""Verdicts on real runs: two strategies that are mathematically the same get no difference, and a
duplicate run in a sweep folder is refused in one line naming both folders."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

from conftest import QUICK, load_results, run_script_in_process, run_train_in_process


def test_identical_strategies_report_no_difference_and_a_duplicate_is_refused(home: Path):
    sweep = home / "logs" / "same"
    off = ["hydra.callbacks.summarize.transfer_scores=false", "analysis.similarity.examples=0"]  # not about them
    common = ["-m", "experiment=img2txt", "seed=0,1", *QUICK, f"hydra.sweep.dir={sweep}", *off]
    run_train_in_process([*common, "strategy=finetune"], home)
    # block i trains at trunk_lr * decay^(n-1-i): with decay 1.0 exactly finetune's groups
    run_train_in_process([*common, "strategy=layerwise_lr", "strategy.decay=1.0"], home)
    runs = [load_results(p) for p in sorted(sweep.rglob("results.json"))]
    acc = {(r["strategy"]["name"], r["seed"]): r["target"]["test"]["test/acc"] for r in runs}
    assert acc[("finetune", 0)] == acc[("layerwise_lr", 0)] and acc[("finetune", 1)] == acc[("layerwise_lr", 1)]

    summarize = [str(sweep), "--reference", "finetune"]
    proc = run_script_in_process("summarize", summarize)
    assert proc.returncode == 0, proc.stderr
    with open(sweep / "comparisons.csv") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["group"].startswith("layerwise_lr") and row["reference"] == "finetune"
    assert float(row["diff"]) == 0.0 and float(row["p"]) == 1.0 and row["significant"] == "no"
    for name in ("summary.md", "summary.csv", "comparisons.csv"):
        assert "nan" not in (sweep / name).read_text().lower()
    assert "layerwise_lr vs finetune | 1.0" not in (sweep / "summary.md").read_text()  # data size is 0.1

    # the same job again, in the same sweep folder under another name: a duplicate (a copy of its folder,
    # which is what a rerun would write, without paying for the rerun)
    [first] = [p.parent for p in sorted(sweep.rglob("results.json"))
               if (load_results(p)["strategy"]["name"], load_results(p)["seed"]) == ("finetune", 0)]
    shutil.copytree(first, sweep / "again_s0")
    proc = run_script_in_process("summarize", summarize)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "again_s0" in lines[0] and "_finetune_f0.1_s0" in lines[0] and "--keep-newest" in lines[0]
