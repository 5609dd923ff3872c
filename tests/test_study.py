"""make study: the presets' sweeps are valid configs, the runner's input errors are one line, and the page
is written from the sweep folders alone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import study  # noqa: E402

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "study").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_cell_of_every_preset_is_a_valid_config(preset: str):
    """Each cell's first job (the first value of every comma list) composes and passes the config check, so a
    study cannot fail at its fifth cell for a misspelt key."""
    from xfer.schema import validate

    spec = study.load(preset)
    assert spec["cells"] and len(spec["seeds"]) >= (5 if preset != "smoke" else 2)
    for cell in spec["cells"]:
        assert set(cell["answers"]) <= set(__import__("xfer.report.study", fromlist=["QUESTIONS"]).QUESTIONS)
        for _, args in study.sweeps(cell, spec["seeds"], spec.get("launcher", [])):
            pairs = [a.split("=", 1) for a in args if "=" in a and not a.startswith(("hydra.", "hydra/"))]
            assert study.sweep_misuse(args) is None, (preset, cell["id"])
            first = [f"{key}={study._values(value.removeprefix('choice(').removesuffix(')'))[0]}"
                     for key, value in pairs]
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("train", overrides=[*first, "paths.output_dir=/tmp/x"])
            validate(cfg)


def test_job_counts_and_bad_input(capsys):
    assert study.jobs(["experiment=img2img", "strategy=a,b,c", "seed=0,1", "target.samples_per_class=10,50"]) == 12
    assert study.jobs(["experiment=img2img"]) == 1
    # Hydra composes a sweep's config before a strategy is chosen: a one-value strategy key there is refused
    assert study.sweep_misuse(["strategy=a,b", "strategy.k=2"]) == \
        "strategy.k=2 beside a sweep over strategy=; write strategy.k=choice(2)"
    assert study.sweep_misuse(["strategy=a,b", "strategy.k=choice(2)", "strategy.lr=1,2"]) is None
    assert study.sweep_misuse(["strategy=a", "strategy.k=2"]) is None
    with pytest.raises(SystemExit) as err:
        study.main(["study=nope", "--dry-run"])
    assert err.value.code == 2 and "study=nope: no conf/study/nope.yaml; allowed: cpu, full, smoke" in capsys.readouterr().err
    assert study.main(["study=smoke", "--dry-run", "--only", "control,nope"]) == 2
    assert "--only nope: no such cell; allowed: control, img2txt" in capsys.readouterr().err
    assert study.main(["cpu"]) == 2
    assert study.main(["study=cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "control: 50 jobs: python train.py -m experiment=img2img" in out and out.strip().endswith("jobs in all")


def _job(folder: Path, name: str, seed: int, acc: float, val: float) -> None:
    run = folder / f"{name}_s{seed}"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "status": "ok", "strategy": {"name": name}, "seed": seed, "fraction": 1.0, "samples_per_class": None,
        "run_dir": str(run), "target": {"test": {"test/acc": acc}, "best_val": val}}))


def test_the_page_is_written_from_the_sweep_folders(tmp_path: Path):
    from xfer.report.study import results_markdown

    cell = tmp_path / "control"
    for seed in range(4):
        _job(cell, "scratch", seed, 0.60 + 0.01 * seed, 0.6)
        _job(cell, "linear_probe", seed, 0.70 + 0.01 * seed + 0.002 * (seed % 2), 0.7)
        _job(cell, "frozen_random", seed, 0.62 + 0.01 * seed, 0.62)
    (cell / "study.json").write_text(json.dumps({"command": "python train.py -m experiment=img2img ...",
                                                 "commit": "abc1234", "wall_s": 90.0}))
    cells = [{"id": "control", "title": "The control", "answers": ["transfer_pays"]},
             {"id": "layers", "title": "Layers", "answers": ["which_layers"]}]
    md = results_markdown("cpu", cells, tmp_path)
    assert study.jobs(["experiment=x", "source.classes=[5,6,7,8,9]", "strategy.k=1,2,3,4", "seed=0,1"]) == 8
    assert "**Cells not yet run:** layers." in md
    assert "- table `control` (The control):" in md
    assert "chosen on validation, linear_probe (test 71.6%, n=4)" in md
    assert "linear_probe vs scratch at data=1.0: +10.1 points [" in md and "Holm p=" in md
    assert "linear_probe vs frozen_random at data=1.0: +8.1 points" in md
    assert "| linear_probe | 1.0 | 4 | 71.6 |" in md
    assert "| `control` | `control` | ? | `python train.py -m experiment=img2img ...` | abc1234 | 1.5 min |" in md
    assert "How to choose the shared and the specific layers?**\n\nNo cell of this preset has run for it yet." in md


@pytest.mark.slow
def test_make_study_runs_its_cells_skips_them_when_done_and_writes_the_page(tmp_path: Path):
    env = {**__import__("os").environ, "XFER_HOME": str(tmp_path)}
    page = tmp_path / "results.md"
    first = subprocess.run([sys.executable, str(ROOT / "scripts" / "study.py"), "study=smoke", "--out", str(page)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout + first.stderr
    md = page.read_text()
    assert "## Answers" in md and "| `control` |" in md and "| `img2txt` |" in md
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "study.py"), "study=smoke", "--out", str(page)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "control: done (6 jobs" in again.stdout and "img2txt: done (4 jobs" in again.stdout
    assert "img2txt_baseline: done (2 jobs" in again.stdout
    assert page.read_text() == md


def test_a_study_asked_of_train_py_points_to_make_study(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "study=cpu"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**__import__("os").environ, "XFER_HOME": str(tmp_path)})
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: study=cpu: a study is not a train.py setting; run it with make study STUDY=cpu "
        "(python scripts/study.py study=cpu)")
    assert not (tmp_path / "logs").exists()
