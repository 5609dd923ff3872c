"""analyze.py transfer: transferability per cut depth, before fine-tuning, beside a random trunk."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUICK, ROOT, run_in_process, run_train_in_process

FAST_SOURCE = ["source_stage.max_epochs=1", "source.fraction=0.4", "threads=2"]


def analyze(args: list[str], home: Path, in_process: bool = False) -> subprocess.CompletedProcess:
    """``XFER_HOME=<home> python analyze.py <args>``: a process of its own, or its main in this one."""
    if in_process:
        return run_train_in_process(args, home, check=False, script="analyze.py")
    env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "analyze.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _top(report: dict, name: str) -> dict:
    (variant,) = [v for v in report["variants"] if v["name"] == name]
    return variant["depths"][-1]


@pytest.mark.slow
def test_img2img_trained_trunk_beats_a_random_one_at_the_top_block(home: Path):
    proc = analyze(["transfer", "experiment=img2img", *FAST_SOURCE], home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = (home / "logs" / "img2img" / "analysis").iterdir()
    assert sorted(p.name for p in folder.glob("transfer.*")) == [f"transfer.{e}" for e in ("csv", "json", "md", "png")]
    report = json.loads((folder / "transfer.json").read_text())
    trained, random = _top(report, "source-trained"), _top(report, "random")
    for score in ("logme", "h_score", "knn_acc", "probe_acc"):
        assert trained[score] > random[score], (score, trained, random)
    # same modality: the source adapter feeds the trained trunk, and the source head gives LEEP and NCE
    feeding = {v["name"]: v["feeding"] for v in report["variants"]}
    assert feeding["source-trained"].startswith("source adapter")
    assert "warm-up" in feeding["random"]
    top = report["variants"][0]["top"]
    assert top["leep"] <= 0 and top["nce"] <= 0
    rows = list(csv.DictReader((folder / "transfer.csv").open()))
    assert [(r["trunk"], int(r["depth"])) for r in rows] == [(t, k) for t in ("source-trained", "random")
                                                             for k in (1, 2, 3, 4)]
    assert report["n_train"] == 50 and report["command"].startswith("python analyze.py transfer experiment=img2img")
    assert "warm-up" in (folder / "transfer.md").read_text()


@pytest.mark.slow
def test_a_cross_modal_pair_warms_the_target_adapter_up_and_has_no_leep(home: Path, monkeypatch):
    from xfer.analysis.cli import compose
    from xfer.analysis.transfer import transfer_scores

    monkeypatch.setenv("XFER_HOME", str(home))
    cfg = compose(["experiment=img2txt", "target.fraction=0.05", "analysis.transfer.max_val=100",
                   "analysis.transfer.warmup_steps=3"])
    report = transfer_scores(cfg, None)  # the trunk as built (no source stage): random, beside the control
    assert [v["name"] for v in report["variants"]] == ["as built", "random"]
    assert all("3 adapter-only warm-up steps" in v["feeding"] and v["top"] is None for v in report["variants"])
    assert len(report["variants"][0]["depths"]) == 4 and report["n_val"] == 100


@pytest.mark.slow
def test_run_folder_mode_uses_the_runs_source_trunk_and_keeps_the_run(home: Path, monkeypatch):
    r = run_in_process(["experiment=img2img", *QUICK], home)
    run = Path(r["run_dir"])
    before = (run / "results.json").read_bytes()
    proc = analyze(["transfer", f"run={run}"], home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run / "analysis" / "transfer.json").read_text())
    assert report["source"] == "mnist5k" and report["command"] == f"python analyze.py transfer run={run}"
    assert (run / "results.json").read_bytes() == before

    # its source trunk gone from the cache, and no source checkpoint in the run that trained it
    shutil.rmtree(home / "cache" / "trunks" / r["source"]["key"])
    shutil.rmtree(run / "checkpoints" / "source")
    proc = analyze(["transfer", f"run={run}"], home)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "its source trunk is neither in the cache" in proc.stderr


@pytest.mark.parametrize("args, words, in_process", [
    (["bogus"], "analyze.py bogus: unknown command; allowed: transfer", False),  # a real analyze.py process
    (["transfer", "run=/nonexistent/run"], "run=/nonexistent/run: not a folder", True),
    (["transfer", "analysis.transfer.knn_k=0"], "analysis.transfer.knn_k=0", True),
    (["transfer", "multirun=.", "seed=1"], "with multirun= each run's own config is used", True),
])
def test_bad_input_is_one_line_exit_2(home: Path, args: list[str], words: str, in_process: bool):
    proc = analyze(args, home, in_process)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


def test_a_run_folder_it_cannot_use_is_one_line(home: Path):
    empty = home / "not_a_run"
    empty.mkdir()
    proc = analyze(["transfer", f"run={empty}"], home, in_process=True)
    assert proc.returncode == 2 and "no .hydra/config.yaml there" in proc.stderr
    (empty / ".hydra").mkdir()
    (empty / ".hydra" / "config.yaml").write_text("name: x\n")
    (empty / "results.json").write_text(json.dumps({"status": "failed"}))
    proc = analyze(["transfer", f"run={empty}"], home, in_process=True)
    assert proc.returncode == 2 and "its status is 'failed'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_layer_sweep_ends_with_the_scores_ranked_against_its_accuracies(home: Path):
    env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "experiment=img2img", "sweep=layers",
                           "strategy=freeze_first_k", "strategy.k=1,2,4", "seed=0,1", *FAST_SOURCE,
                           "trainer.max_epochs=2", "trainer.enable_progress_bar=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (home / "logs" / "img2img" / "multiruns").iterdir()
    assert sorted(p.name for p in (sweep / "transfer").iterdir()) == ["seed0", "seed1"]
    md = (sweep / "summary.md").read_text()
    section = md[md.index("## Transferability scores against what the sweep measured"):]
    assert "### freeze_first_k" in section and "| Kendall tau with test acc" in section
    assert [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")][1:4] == ["1", "2", "4"]
