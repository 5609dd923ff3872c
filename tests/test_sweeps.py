"""Sweeps end in a summary that matches their jobs, reuse the source stage, and survive failures."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from conftest import QUICK, load_results, results_files, run_train
from xfer.report import summarize, write_summary


def sweep_dirs(home: Path) -> list[Path]:
    return sorted(p.parent for p in (home / "logs").rglob("multirun.yaml"))


def test_multirun_summary_matches_jobs_and_source_runs_once_per_seed(home: Path):
    proc = run_train(["-m", "experiment=img2txt", "strategy=scratch,linear_probe,finetune", "seed=0,1",
                      *QUICK], home)
    [sweep] = sweep_dirs(home)
    runs = [load_results(p) for p in results_files(home)]
    assert len(runs) == 6 and all(r["status"] == "ok" for r in runs)

    # the source stage ran once per seed: two cache entries, two "training" lines, four reuses
    log = proc.stdout + proc.stderr
    assert log.count("source stage: training the trunk") == 2
    assert log.count("reusing the cached trunk") == 2  # finetune reuses what linear_probe trained
    assert len(list((home / "cache" / "trunks").glob("*/source_model.safetensors"))) == 2

    # summary.csv numbers are the jobs' own numbers
    with open(sweep / "summary.csv") as fh:
        rows = {r["strategy"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"scratch", "linear_probe", "finetune"}
    for name, row in rows.items():
        accs = [r["target"]["test"]["test/acc"] for r in runs if r["strategy"]["name"] == name]
        assert int(row["n"]) == 2 and float(row["mean"]) == pytest.approx(sum(accs) / 2, abs=1e-6)
        assert float(row["ci95_low"]) <= float(row["mean"]) <= float(row["ci95_high"])
    md = (sweep / "summary.md").read_text()
    assert "Winner on validation at data=0.1: " in md and "scratch" in md
    for name in rows:
        mean, val = float(rows[name]["mean"]), float(rows[name]["val_mean"])
        assert f"| {name} | 0.1 | 2 | 0 | {100 * val:.1f} | {100 * mean:.1f} |" in md
    with open(sweep / "comparisons.csv") as fh:
        assert sorted(r["group"] for r in csv.DictReader(fh)) == ["finetune", "linear_probe"]
    assert (sweep / "accuracy_by_strategy.png").stat().st_size > 1000
    assert (sweep / "learning_curves.png").stat().st_size > 1000
    assert "sweep summary:" in proc.stdout
    # every strategy's CKA per block, comparable across them: a frozen trunk does not move; seeds are paired
    assert "| linear_probe (n=2) | 0.1 | 1.00 | 1.00 | 1.00 | 1.00 |" in md
    assert "| finetune (1 pair) | 0.1 |" in md and "(n/a: source mnist5k is image" in md
    assert (sweep / "similarity.png").stat().st_size > 1000

    # the summarizer works on a partial sweep folder, and names what is missing
    partial = home / "partial"
    shutil.copytree(sweep, partial)
    victim = sorted(partial.glob("*_finetune_*"))[0]
    (victim / "results.json").unlink()
    s = write_summary(partial, plots=False)
    assert [g.n for g in s.groups if g.strategy == "finetune"] == [1]
    assert any(victim.name in p for p in s.incomplete)
    assert victim.name in (partial / "summary.md").read_text()


def test_a_failing_job_is_reported_and_the_others_finish(home: Path):
    proc = run_train(["-m", "experiment=img2txt", "strategy=scratch", "target.fraction=0.1,0", "seed=0",
                      *[q for q in QUICK if not q.startswith("target.fraction")]], home)
    assert proc.returncode == 0
    runs = [load_results(p) for p in results_files(home)]
    ok = [r for r in runs if r["status"] == "ok"]
    failed = [r for r in runs if r["status"] == "failed"]
    assert len(ok) == 1 and len(failed) == 1
    assert "fraction=0" in failed[0]["error"] and "0 < fraction <= 1" in failed[0]["error"]
    [sweep] = sweep_dirs(home)
    md = (sweep / "summary.md").read_text()
    assert "## Failed jobs" in md and "fraction=0" in md


@pytest.mark.slow  # parallel workers; make test-full
def test_joblib_launcher_runs_two_jobs_in_parallel_with_shared_cores(home: Path):
    run_train(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "experiment=img2txt",
               "strategy=finetune,linear_probe", *[q for q in QUICK if not q.startswith("threads")]], home)
    runs = [load_results(p) for p in results_files(home)]
    assert len(runs) == 2 and all(r["status"] == "ok" for r in runs)
    import os
    cores = len(os.sched_getaffinity(0))
    assert all(r["threads"] * 2 <= max(cores, 2) for r in runs)
    # the two jobs share one source key: the lock let exactly one of them train it
    assert sorted(r["source"]["cached"] for r in runs) == [False, True]
    [sweep] = sweep_dirs(home)
    assert (sweep / "summary.md").is_file()


def test_summarize_script_rebuilds_and_refuses_bad_folders(home: Path, tmp_path: Path):
    import subprocess
    import sys

    from conftest import ROOT

    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "is not a folder" in bad.stderr
    empty = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), str(tmp_path)],
                           capture_output=True, text=True)
    assert empty.returncode == 1 and "no results.json" in empty.stderr


@pytest.mark.slow
def test_img2img_control_shows_what_the_digit_features_are_worth(home: Path):
    """The framework's truth test, on digits 0-4 -> 5-9 with 10 labels per class: frozen, the trunk
    trained on digits 0-4 is a better feature extractor than the same trunk at its random initial
    weights (measured over seeds 0-4: +11.8 points on average; README, Results). Fine-tuning it is *not*
    asserted to beat scratch: at scratch's own lr it does not (README)."""
    run_train(["-m", "experiment=img2img", "strategy=linear_probe,frozen_random", "seed=0,1,2",
               "trainer.enable_progress_bar=false"], home, timeout=3000)
    [sweep] = sweep_dirs(home)
    s = summarize(sweep)
    [control] = [c for c in s.comparisons if c.contrast]
    assert (control.group.name, control.reference.name) == ("linear_probe", "frozen_random")
    assert control.n == 3 and control.diff.mean > 0.03, control.diff


@pytest.mark.slow  # scripts/tune.py is the fast-suite path; make test-full
def test_optuna_search_tunes_lrs_on_validation_accuracy(home: Path):
    proc = run_train(["-m", "experiment=img2txt", "hparams_search=optuna", "strategy=linear_probe",
                      "hydra.sweeper.n_trials=2", *QUICK], home)
    runs = [load_results(p) for p in results_files(home)]
    assert len(runs) == 2 and all(r["status"] == "ok" for r in runs)
    from omegaconf import OmegaConf

    tried = [OmegaConf.load(Path(r["run_dir"]) / ".hydra" / "config.yaml").optim for r in runs]
    assert tried[0].lr != tried[1].lr and tried[0].weight_decay != tried[1].weight_decay
    sweep = Path(runs[0]["run_dir"]).parent
    best = (sweep / "optimization_results.yaml").read_text()
    assert "optim.lr" in best and "best_value" in best
    best_value = float(best.split("best_value:")[1].split()[0])
    assert best_value == pytest.approx(max(r["target"]["best_val"] for r in runs), abs=1e-6)
