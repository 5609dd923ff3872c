"""scripts/tune.py: an equal tuning budget per strategy, chosen on validation, the test split untouched."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import QUICK, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import tune  # noqa: E402


@pytest.mark.parametrize("strategy,dims", [
    ("scratch", ["optim.lr", "strategy.trunk_lr"]),
    ("frozen_random", ["optim.lr"]),
    ("linear_probe", ["optim.lr"]),
    ("finetune", ["optim.lr", "optim.trunk_lr"]),
    ("lp_ft", ["optim.lr", "optim.trunk_lr"]),  # a phased plan: the trunk lr matters after the probe
])
def test_each_strategy_tunes_exactly_the_lrs_its_plan_uses(strategy: str, dims: list[str]):
    assert tune.search_space(["experiment=img2txt"], strategy) == dims


@pytest.mark.slow  # 8 runs; make test-full
def test_tune_gives_every_strategy_the_same_trials_and_never_evaluates_test(tmp_path: Path):
    out = tmp_path / "tune"
    env_home = {"XFER_HOME": str(tmp_path)}
    import os

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "tune.py"), "experiment=img2txt",
                           "--strategies", "scratch,linear_probe", "--trials", "2", "--seeds", "0,1",
                           "--out", str(out), *QUICK], cwd=ROOT, env={**os.environ, **env_home},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    chosen = {c["strategy"]: c for c in json.loads((out / "tuned.json").read_text())}
    assert {s: c["trials"] for s, c in chosen.items()} == {"scratch": 2, "linear_probe": 2}
    trials = sorted((out / "tune").rglob("results.json"))
    assert len(trials) == 4
    for path in trials:
        r = json.loads(path.read_text())
        assert r["seed"] == 1000 and r["target"]["test"] == {}  # validation only
        assert r["target"]["best_val"] is not None
        import numpy as np

        with np.load(path.parent / "predictions.npz") as p:
            assert not any(k.startswith("test_") for k in p.files)
    # the best trial's lrs, and nothing else, go to the final runs
    for name, c in chosen.items():
        vals = {json.loads(p.read_text())["target"]["best_val"]: p.parent for p in (out / "tune" / name).rglob("results.json")}
        assert c["best_val"] == max(vals)
    finals = [json.loads(p.read_text()) for p in sorted((out / "final").rglob("results.json"))]
    assert sorted((r["strategy"]["name"], r["seed"]) for r in finals) == [
        ("linear_probe", 0), ("linear_probe", 1), ("scratch", 0), ("scratch", 1)]
    for r in finals:
        cfg = OmegaConf.load(Path(r["run_dir"]) / ".hydra" / "config.yaml")
        params = chosen[r["strategy"]["name"]]["params"]
        assert cfg.optim.lr == pytest.approx(params["optim.lr"], rel=1e-5)
        if "strategy.trunk_lr" in params:
            assert r["strategy"]["trunk_lr"] == pytest.approx(params["strategy.trunk_lr"], rel=1e-5)
        assert "test/acc" in r["target"]["test"]  # the test split is read once, by the final runs
    assert (out / "final" / "summary.md").is_file() and "linear_probe" in (out / "tuned.md").read_text()


def test_tune_refuses_what_it_sets_itself(tmp_path: Path):
    for args, needle in ((["strategy=finetune"], "tune.py sets strategy"),
                         (["--strategies", "nope"], "'nope'; allowed:"),
                         (["--tune-seed", "0"], "is also a final seed")):
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "tune.py"), "--out", str(tmp_path / "t"), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
