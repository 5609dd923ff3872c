"""The optional loggers (logger=mlflow, logger=wandb): each stage of a run is its own run of that tool,
stored inside the run folder with no server and no network; without the extra installed, one line."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import QUICK, RunFailed, run_in_process, run_train


def test_logger_mlflow_writes_one_mlflow_run_per_stage_in_the_run_folder(home: Path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = run_in_process(["experiment=img2img", "logger=mlflow", *QUICK], home)
    assert r["status"] == "ok"
    store = Path(r["run_dir"]) / "mlruns"
    assert store.is_dir()

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("img2img")  # experiment_name: ${name}
    assert experiment is not None
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"source", "target"}
    target = runs["target"].data
    assert target.metrics["test/acc"] == pytest.approx(r["target"]["test"]["test/acc"])
    assert "val/acc" in runs["source"].data.metrics
    assert target.params  # the run's settings, as in TensorBoard's HPARAMS


@pytest.mark.slow  # a subprocess: wandb's service process must not outlive pytest's
def test_logger_wandb_writes_offline_runs_per_stage_without_network(home: Path):
    pytest.importorskip("wandb")
    env = {"WANDB_CONFIG_DIR": str(home / "wandb-config"), "WANDB_CACHE_DIR": str(home / "wandb-cache"),
           "WANDB_DATA_DIR": str(home / "wandb-data"), "WANDB_API_KEY": "", "WANDB_SILENT": "true"}
    run_train(["experiment=img2img", "logger=wandb", *QUICK], home, env=env)
    (results,) = sorted((home / "logs").rglob("results.json"))
    run = results.parent
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2, offline
    # one W&B run per stage, its id unique to the run folder and stage (runs of two folders never merge)
    assert {name.rsplit("-", 1)[-1] for name in offline} == {"source", "target"}
    assert all(f"-{run.name}-" in name for name in offline), offline
    for name in offline:
        assert list((run / "wandb" / name).glob("*.wandb")), name  # the run's log, for `wandb sync`


@pytest.mark.parametrize("choice, package", [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_logger_whose_extra_is_missing_is_one_line_exit_2(home: Path, monkeypatch, capsys,
                                                           choice: str, package: str):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == package else real(name, *a, **k))
    with pytest.raises(RunFailed) as err:
        run_in_process(["experiment=img2img", f"logger={choice}", *QUICK], home)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"error: logger.{choice} (pytorch_lightning.loggers."), lines
    assert f"needs the {package} package" in lines[-1] and f"pip install 'xfer[{package}]'" in lines[-1], lines
    assert not list((home / "logs").rglob("checkpoints")), "it failed before training"
