"""Scale-out on one CPU machine: DDP over gloo with frozen and unfreezing trunks, and sweeps whose jobs
are real subprocesses through submitit."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import QUICK, load_results, results_files, run_train

DDP_QUICK = [q for q in QUICK if not q.startswith("threads")] + ["trainer=ddp_cpu", "trainer.max_epochs=2"]


def _check_ddp_runs(home: Path, proc, strategies: list[str]) -> list[dict]:
    runs = [load_results(p) for p in results_files(home)]
    assert sorted(r["strategy"]["name"] for r in runs) == sorted(strategies)
    assert all(r["status"] == "ok" for r in runs), ([r.get("error") for r in runs], proc.stderr[-4000:])
    # rank 1 wrote nothing: one cache entry, one results.json per job
    assert len(list((home / "cache" / "trunks").glob("*/source_model.safetensors"))) == 1
    assert len(list((home / "logs").rglob("results.json"))) == len(strategies)
    # FreezingCallback checks at every epoch end that both replicas hold identical weights
    assert "DDP replicas hold different weights" not in proc.stdout + proc.stderr
    for r in runs:
        assert r["params"]["trainable"] < r["params"]["total"]  # part of the trunk stayed frozen
    return runs


@pytest.mark.slow  # ~1 min: two gloo processes; make test-full
def test_ddp_cpu_gradual_unfreeze(home: Path):
    """Blocks unfrozen after DDP wrapped the model still have their gradients averaged."""
    proc = run_train(["experiment=img2txt", "strategy=gradual_unfreeze", *DDP_QUICK], home, timeout=900)
    _check_ddp_runs(home, proc, ["gradual_unfreeze"])


@pytest.mark.slow
def test_ddp_cpu_sweep_of_a_frozen_and_an_unfreezing_strategy(home: Path):
    proc = run_train(["-m", "experiment=img2txt", "strategy=freeze_first_k,gradual_unfreeze", *DDP_QUICK],
                     home, timeout=1800)
    _check_ddp_runs(home, proc, ["freeze_first_k", "gradual_unfreeze"])
    assert len(list((home / "logs").rglob("summary.md"))) == 1


@pytest.mark.slow  # process launcher; make test-full
def test_submitit_local_sweep_runs_jobs_as_processes_and_summarizes(home: Path):
    run_train(["-m", "hydra/launcher=local_processes", "experiment=img2txt", "strategy=scratch",
               "seed=0,1", *[q for q in QUICK if not q.startswith("threads")]], home, timeout=900)
    runs = [load_results(p) for p in results_files(home)]
    assert len(runs) == 2 and all(r["status"] == "ok" for r in runs)
    assert [r["threads"] for r in runs] == [1, 1]  # pinned to the launcher's cpus_per_task
    [summary] = list((home / "logs").rglob("summary.md"))
    assert summary.parent == Path(runs[0]["run_dir"]).parent  # jobs and summary share the sweep folder
    assert ".submitit" in {p.name for p in summary.parent.iterdir()}  # really through submitit
    assert "| scratch | 0.1 | 2 |" in summary.read_text()


def test_each_ddp_spawn_launch_rendezvouses_on_a_fresh_port_unless_the_user_set_one(monkeypatch):
    """Lightning's spawn launcher leaves the port it picked in the parent's MASTER_PORT, so every later
    launch of the process (test after fit, the next job of a sweep) would reuse it."""
    import pytorch_lightning as pl

    from xfer import stage

    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    monkeypatch.setenv("MASTER_PORT", "1")  # what the previous launch left behind
    assert trainer.strategy.cluster_environment.main_port == 1
    stage.fresh_rendezvous(trainer)
    port = trainer.strategy.cluster_environment.main_port
    assert port != 1 and str(port) == os.environ["MASTER_PORT"]
    monkeypatch.setattr(stage, "_PORT_GIVEN", True)  # the user's (or the cluster's) port stays theirs
    monkeypatch.setenv("MASTER_PORT", "29500")
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    stage.fresh_rendezvous(trainer)
    assert trainer.strategy.cluster_environment.main_port == 29500
    single = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    monkeypatch.setattr(stage, "_PORT_GIVEN", False)
    stage.fresh_rendezvous(single)  # no spawn launcher: nothing to do
    assert os.environ["MASTER_PORT"] == "29500"


def test_a_distributed_worker_destroys_its_process_group_at_exit(monkeypatch, tmp_path: Path):
    """Lightning destroys the group at exit only for NCCL; a gloo worker that exits with it alive can die of
    SIGABRT ("terminate called without an active exception") after its work is done."""
    import atexit

    import torch.distributed as dist

    from xfer.callbacks import ProcessGroupTeardown, destroy_process_group

    hooks = []
    monkeypatch.setattr(atexit, "register", hooks.append)
    monkeypatch.setattr(ProcessGroupTeardown, "_registered_pid", None)
    ProcessGroupTeardown().setup(None, None, "fit")  # no group yet (a single-device run): nothing to do
    assert hooks == []
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ProcessGroupTeardown().setup(None, None, "fit")
        ProcessGroupTeardown().setup(None, None, "test")  # the test after the fit: registered once
        assert hooks == [destroy_process_group]
        hooks[0]()
        assert not dist.is_initialized()
        hooks[0]()  # already gone: a no-op
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
