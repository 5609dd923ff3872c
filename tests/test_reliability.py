"""Reliability (issue 6): bad input, interruptions and untrusted files never cost a user their work.

Config validation at load, resume after SIGKILL, atomic writes, untrusted checkpoints and cache
entries, mismatched checkpoints, NaN losses, and eval.py reproducing a run's test accuracy. Issue 18:
faults of the machine (an absent accelerator, a read-only home, a full disk), a one-class data set,
and SIGTERM / Ctrl-C (status interrupted, exit 143 / 130, then resume=last).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import (QUICK, ROOT, RunFailed, choice_overrides, load_results, results_files, run_in_process, run_train,
                      run_train_in_process)
from xfer.argv import CONF_DIR
from xfer.schema import ConfigError, validate


# A run small enough for seconds, long enough (3 target epochs of 32 steps) to be killed mid-epoch.
RESUMABLE = [
    "experiment=img2txt", "source_stage.max_epochs=1", "source.fraction=0.2", "trainer.max_epochs=3",
    "target.fraction=0.2", "trainer.limit_val_batches=2", "threads=1",
]


def _compose(overrides: list[str], conf_dir: Path = CONF_DIR):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        return compose(config_name="train", overrides=overrides)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int | None = None) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    last = lines[-1]
    assert last.startswith("error: "), proc.stderr[-2000:]
    assert sum(line.startswith("error: ") for line in lines) == 1
    for needle in needles:
        assert needle in last, last
    return last


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_dirs(home: Path) -> list[Path]:
    return sorted((home / "logs" / "img2txt" / "runs").glob("*"))


def _crafted_pickle(path: Path, marker: Path, torch_format: bool = True) -> None:
    """A checkpoint that creates ``marker`` when unpickled by a trusting loader."""

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    if torch_format:
        torch.save({"state_dict": {"trunk.blocks.0.conv.weight": torch.zeros(1)}, "epoch": 0, "payload": Payload()},
                   path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"state_dict": {}, "epoch": 0, "payload": Payload()}, fh, protocol=2)


def _lightning_like_ckpt(path: Path, channels: list[int]) -> None:
    """A checkpoint with a CNN trunk of the given widths (a different block count or shape)."""
    from xfer.models.trunks import CNNTrunk

    trunk = CNNTrunk(in_channels=32, channels=channels)
    torch.save({"epoch": 0, "global_step": 1, "state_dict": {f"trunk.{k}": v for k, v in trunk.state_dict().items()}},
               path)


# -- shared runs -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability_home")


@pytest.fixture(scope="module")
def reference_run(shared_home: Path) -> Path:
    """One uninterrupted run with RESUMABLE settings (it also fills the trunk cache). In-process: a run
    folder like train.py's (.hydra/config.yaml and overrides.yaml included), without its start-up."""
    run_in_process([*RESUMABLE, "trainer.enable_progress_bar=false"], shared_home)
    runs = _run_dirs(shared_home)
    assert len(runs) == 1
    return runs[0]


# -- config validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("override", choice_overrides())
def test_every_shipped_config_passes_validation(override: str):
    validate(_compose([override]))


@pytest.mark.parametrize("override,message", [
    ("optim.lr=-1", "optim.lr=-1: must be a number > 0"),
    ("optim.lr=0", "optim.lr=0: must be a number > 0"),
    ("optim.lr=fast", "optim.lr=fast: must be a number > 0"),
    ("optim.lr=inf", "optim.lr=inf: must be a number > 0"),
    ("optim.trunk_lr=0", "optim.trunk_lr=0: must be a number > 0"),
    ("source_stage.optim.lr=-0.1", "source_stage.optim.lr=-0.1: must be a number > 0"),
    ("optim.weight_decay=-1", "optim.weight_decay=-1: must be a number >= 0"),
    ("optim.warmup_fraction=1", "optim.warmup_fraction=1: must be a number with 0 <= warmup_fraction < 1"),
    ("optim.schedule=cos", "optim.schedule=cos: must be one of cosine, constant, plateau"),
    ("target.fraction=0", "target.fraction=0: must be a number with 0 < fraction <= 1"),
    ("target.fraction=1.5", "target.fraction=1.5: must be a number with 0 < fraction <= 1"),
    ("source.fraction=-0.5", "source.fraction=-0.5: must be a number with 0 < fraction <= 1"),
    ("trainer.max_epochs=abc", "trainer.max_epochs=abc: must be an integer >= 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: must be an integer >= 1"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5: must be an integer >= 1"),
    ("source_stage.max_epochs=0", "source_stage.max_epochs=0: must be an integer >= 1"),
    ("target.batch_size=0", "target.batch_size=0: must be an integer >= 1"),
    ("source.eval_batch_size=-1", "source.eval_batch_size=-1: must be an integer >= 1"),
    ("target.on_device=gpu", "target.on_device=gpu: must be"),
    ("source.on_device_limit_mb=0", "source.on_device_limit_mb=0: must be a number > 0"),
    ("target.pin_memory=auto", "target.pin_memory=auto: must be true or false"),
    ("seed=abc", "seed=abc: must be an integer 0..4000000"),
    ("seed=-1", "seed=-1: must be an integer 0..4000000"),
    ("threads=0", "threads=0: must be an integer >= 1 or null"),
    ("trainer.enable_progress_bar=maybe", "trainer.enable_progress_bar=maybe: must be true or false"),
    ("head.dropout=1.5", "head.dropout=1.5: must be a number with 0 <= dropout < 1"),
    ("trunk.channels=[32,0]", "trunk.channels=[32, 0]: must be a non-empty list of integers >= 1"),
    ("strategy=freeze_first_k strategy.k=two", "strategy.k=two: must be an integer"),
    ("trainer=gpu optim.fused=true", "optim.fused=true with trainer.precision=bf16-mixed and gradient clipping"),
    ("+optim.lrr=1", "optim.lrr is not a known key (did you mean optim.lr?); allowed: betas, fused, label_smoothing, lr,"),
    ("+source_stage.optim.wd=1", "source_stage.optim.wd is not a known key; allowed: betas,"),
    ("+trainer.max_epoch=3", "trainer.max_epoch is not a known key (did you mean trainer.max_epochs?)"),
    ("+strategy.kk=1", "strategy.kk is not a known key; allowed: bn_policy"),
    ("+head.widht=1", "head.widht is not a known key; allowed: dropout"),
    ("+lr=1", "lr is not a known key; allowed: analysis, callbacks, ckpt_path,"),
    ("+callbacks.checkpoint.every=1",
     "callbacks.checkpoint.every is not a known key; allowed: mode, monitor, save_last"),
    ("+trainer.plugins=[{_target_:nope.Nope}]", "trainer.plugins[0]._target_=nope.Nope: no such class can be imported"),
    ("+trainer.plugins={_target_:pytorch_lightning.plugins.io.AsyncCheckpointIO,bogus:1}",
     "trainer.plugins.bogus is not a known key; allowed: checkpoint_io"),
])
def test_validation_names_key_value_and_what_is_allowed(override: str, message: str):
    with pytest.raises(ConfigError) as err:
        validate(_compose(["experiment=img2txt", *override.split()]))
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_reader_specific_keys_pass_but_common_ones_are_checked():
    validate(_compose(["target=csv", "target.reader.text_column=body", "target.reader.sep=tab",
                       "target.reader.class_names=[neg,pos]"]))
    with pytest.raises(ConfigError, match=r"^target.val_fraction=0.6 and target.test_fraction=0.5: must add up"):
        validate(_compose(["target.val_fraction=0.6", "target.test_fraction=0.5"]))


def test_a_typo_inside_an_experiment_file_is_a_one_line_error(tmp_path: Path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "typo.yaml").write_text(
        "# @package _global_\nname: typo\noptim:\n  lrr: 0.01\n")
    (conf / "experiment" / "typo2.yaml").write_text(
        "# @package _global_\nname: typo2\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"^optim.lrr is not a known key \(did you mean optim.lr\?\)"):
        validate(_compose(["experiment=typo"], conf))
    with pytest.raises(ConfigError, match=r"^trainer.max_epoch is not a known key \(did you mean trainer.max_epochs"):
        validate(_compose(["experiment=typo2"], conf))


@pytest.mark.parametrize("args,needles", [
    (["optim.lr=-1"], ["optim.lr=-1", "must be a number > 0"]),
    pytest.param(["trainer.max_epochs=abc"], ["trainer.max_epochs=abc", "must be an integer >= 1"],
                 marks=pytest.mark.slow),
    (["optim.lrr=1"], ["optim.lrr is not a known key", "allowed: betas"]),     # refused by Hydra, one line
    pytest.param(["strategy=freeze_first_k", "strategy.k=7"], ["strategy.k=7", "0..4"],  # k within the trunk
                 marks=pytest.mark.slow),  # test_pipeline checks the same error fast
])
def test_bad_config_exits_2_with_one_line_before_anything_trains(home: Path, args: list[str], needles: list[str]):
    proc = run_train_in_process(["experiment=img2txt", *QUICK, *args], home, check=False)
    _one_line_error(proc, *needles, code=2)
    assert "source stage: training" not in proc.stdout + proc.stderr
    assert not (home / "cache").exists()


# -- resume ----------------------------------------------------------------------------------------
def _start_and_kill_mid_epoch(args: list[str], home: Path, timeout: float = 240) -> tuple[Path, str]:
    """Start train.py and SIGKILL it inside the target stage's second epoch: once epoch 0's last.ckpt
    exists, wait about a third of an epoch (timed from the start of the target stage), then kill."""
    env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    before = set(_run_dirs(home))
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: list[str] = []
    target_started: list[float] = []

    def reader() -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 4096):
            seen.append(chunk.decode(errors="replace"))
            if not target_started and "reusing the cached trunk" in "".join(seen[-3:]):
                target_started.append(time.monotonic())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline, last, killed = time.monotonic() + timeout, None, False
    while proc.poll() is None and time.monotonic() < deadline:
        new = sorted(set(_run_dirs(home)) - before)
        if new and (new[0] / "checkpoints" / "target" / "last.ckpt").exists() and target_started:
            last = time.monotonic()
            time.sleep(0.35 * (last - target_started[0]))  # about a third into epoch 1
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    if not killed:
        proc.kill()
    proc.wait()
    thread.join(timeout=10)
    output = "".join(seen)
    assert killed, f"the run ended before it could be killed:\n{output[-3000:]}"
    new = sorted(set(_run_dirs(home)) - before)
    assert len(new) == 1, new
    return new[0], output


@pytest.mark.slow  # a kill and a resume; make test-full
def test_resume_after_sigkill_mid_epoch_matches_an_uninterrupted_run(shared_home: Path, reference_run: Path):
    ref = load_results(reference_run / "results.json")
    killed, output = _start_and_kill_mid_epoch([*RESUMABLE, "trainer.enable_progress_bar=false"], shared_home)
    assert not (killed / "results.json").exists()
    last = torch.load(killed / "checkpoints" / "target" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["epoch"] == 0, "killed after epoch 1 ended, not inside it"  # so the kill was mid-epoch 1
    before = _hashes(killed)

    proc = run_train([f"resume={killed}"], shared_home)  # the earlier run's overrides are reused
    resumed_dir = Path(re.search(r"^\s+run\s+(\S+)$", proc.stdout, re.M).group(1))
    assert resumed_dir != killed
    resumed = load_results(resumed_dir / "results.json")
    assert resumed["status"] == "ok"
    assert resumed["resumed_from"]["run_dir"] == str(killed)
    assert resumed["resumed_from"]["epoch"] == 0
    final = torch.load(resumed_dir / "checkpoints" / "target" / "last.ckpt", weights_only=True, map_location="cpu")
    assert final["epoch"] == 2  # it finished all 3 epochs
    for key in ("test/acc", "test/f1"):
        assert abs(resumed["target"]["test"][key] - ref["target"]["test"][key]) < 1e-3, (key, resumed, ref)
    assert abs(resumed["target"]["best_val"] - ref["target"]["best_val"]) < 1e-3
    # nothing in the earlier run's folder changed, nothing was added to it
    assert _hashes(killed) == before


def test_ckpt_path_last_continues_the_newest_run_with_the_same_settings(shared_home: Path, reference_run: Path,
                                                                       tmp_path: Path, monkeypatch):
    from xfer.resume import find_resume

    monkeypatch.setenv("XFER_HOME", str(shared_home))
    before = _hashes(reference_run)
    cfg = _compose([*RESUMABLE, "ckpt_path=last"])
    newest_matching = find_resume(cfg, tmp_path / "new_run")
    assert newest_matching is not None and newest_matching.run_dir in _run_dirs(shared_home)
    copy = torch.load(newest_matching.ckpt_path, weights_only=True, map_location="cpu")
    states = [s for s in copy["callbacks"].values() if isinstance(s, dict) and "dirpath" in s]
    assert states and all(str(tmp_path / "new_run") in s["dirpath"] for s in states)  # re-pointed here
    with pytest.raises(ConfigError, match=r"resume=last: none of the \d+ earlier runs .* optim.lr is 0.01 here"):
        find_resume(_compose([*RESUMABLE, "optim.lr=0.01", "resume=last"]), tmp_path / "other_run")
    with pytest.raises(ConfigError, match=r"this run does not have the settings of .*optim.lr is 0.01 here but 0.003"):
        find_resume(_compose([*RESUMABLE, "optim.lr=0.01", f"resume={reference_run}"]), tmp_path / "third_run")
    assert _hashes(reference_run) == before


@pytest.mark.slow  # make test-full
def test_resume_of_a_folder_that_is_not_a_run_is_one_line(home: Path, tmp_path: Path):
    proc = run_train([f"resume={tmp_path}"], home, check=False)
    _one_line_error(proc, f"resume={tmp_path}", "not a run folder", code=2)
    proc = run_train(["experiment=img2txt", *QUICK, "resume=last"], home, check=False)
    _one_line_error(proc, "resume=last", "no earlier run", code=2)


# -- atomic writes ---------------------------------------------------------------------------------
_CRASH = r"""
import json, os, signal, sys
from pathlib import Path
import torch
from xfer import io
from xfer.cache import TrunkCache
what, target = sys.argv[1], Path(sys.argv[2])
os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # die between write and rename
if what == "json":
    io.atomic_write_json(target / "results.json", {"status": "ok", "big": list(range(200000))})
else:
    TrunkCache(target).store("k1", {"w": torch.ones(1000)}, {"key": "k1"})
"""


def test_a_crash_mid_write_leaves_no_half_written_file(tmp_path: Path):
    from xfer.cache import TrunkCache
    from xfer.report import collect

    run = tmp_path / "sweep" / "0_finetune_f1.0_s0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"status": "ok", "run_dir": str(run), "seed": 0}))
    proc = subprocess.run([sys.executable, "-c", _CRASH, "json", str(run)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert json.loads((run / "results.json").read_text()) == {"status": "ok", "run_dir": str(run), "seed": 0}
    runs, incomplete = collect(tmp_path / "sweep")  # the summarizer sees the old whole file only
    assert [r["seed"] for r in runs] == [0] and not incomplete

    cache_root = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", _CRASH, "cache", str(cache_root)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cache = TrunkCache(cache_root)
    assert not cache.has("k1") and not (cache_root / "k1").exists()
    state, meta, hit = cache.get_or_build("k1", lambda: ({"w": torch.zeros(3)}, {"key": "k1"}))
    assert not hit and cache.has("k1")


# -- untrusted files -------------------------------------------------------------------------------
@pytest.mark.parametrize("torch_format", [True, False], ids=["torch_save", "plain_pickle"])
def test_a_crafted_pickle_is_refused_without_running_it(tmp_path: Path, torch_format: bool):
    from xfer.checkpoints import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"
    _crafted_pickle(tmp_path / "evil.ckpt", marker, torch_format)
    with pytest.raises(CheckpointError, match="is not a safe checkpoint.*refusing to load it"):
        load_checkpoint(tmp_path / "evil.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.ckpt")
    assert not marker.exists()
    # the payload is real: a trusting loader runs it
    if torch_format:
        torch.load(tmp_path / "evil.ckpt", weights_only=False)
    else:
        pickle.loads((tmp_path / "evil.ckpt").read_bytes())
    assert marker.exists()


def test_train_refuses_a_crafted_checkpoint(home: Path, tmp_path: Path):
    marker = tmp_path / "pwned"
    _crafted_pickle(tmp_path / "evil.ckpt", marker)
    proc = run_train_in_process(["experiment=img2txt", *QUICK, f"ckpt_path={tmp_path / 'evil.ckpt'}"], home,
                                check=False)
    _one_line_error(proc, "evil.ckpt is not a safe checkpoint", "refusing to load it", code=2)
    assert not marker.exists()
    assert "source stage: training" not in proc.stdout + proc.stderr


@pytest.mark.slow  # train.py refusing one stays fast; make test-full
def test_eval_refuses_a_crafted_checkpoint(home: Path, tmp_path: Path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "run" / "checkpoints" / "target" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    _crafted_pickle(ckpt, marker)
    proc = run_train([f"ckpt_path={ckpt}"], home, check=False, script="eval.py")
    _one_line_error(proc, "best.ckpt is not a safe checkpoint", code=2)
    assert not marker.exists()


def test_a_tampered_cache_entry_is_refused_without_running_it(tmp_path: Path):
    from safetensors.torch import save_file

    from xfer.cache import MODEL_FILE, CacheError, TrunkCache

    cache, marker = TrunkCache(tmp_path / "cache"), tmp_path / "pwned"
    cache.store("k", {"trunk.w": torch.ones(4)}, {"key": "k"})
    _crafted_pickle(cache.entry("k") / MODEL_FILE, marker)  # a pickle where the safetensors file was
    with pytest.raises(CacheError, match=r"trunk cache entry .* is damaged: .*checksum.*delete that folder"):
        cache.load("k")
    # an entry written without a checksum (older layout): safetensors itself refuses the pickle
    meta = json.loads((cache.entry("k") / "meta.json").read_text())
    meta.pop("model_sha256")
    (cache.entry("k") / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match=r"trunk cache entry .* is unreadable \(.*\); delete that folder"):
        cache.load("k")
    # valid safetensors with other weights than recorded
    save_file({"trunk.w": torch.zeros(4)}, str(cache.entry("k") / MODEL_FILE))
    meta["model_sha256"] = "0" * 64
    (cache.entry("k") / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="is damaged"):
        cache.load("k")
    assert not marker.exists()


# -- mismatched checkpoints ------------------------------------------------------------------------
@pytest.mark.slow  # make test-full
def test_a_checkpoint_with_another_trunk_is_one_line(home: Path, tmp_path: Path):
    _lightning_like_ckpt(tmp_path / "three_blocks.ckpt", [32, 64, 128])
    proc = run_train(["experiment=img2txt", *QUICK, f"ckpt_path={tmp_path / 'three_blocks.ckpt'}"], home, check=False)
    _one_line_error(proc, "does not fit the configured trunk", "the checkpoint has 3 trunk blocks",
                    "the configured trunk has 4", code=2)
    assert "source stage: training" not in proc.stdout + proc.stderr


def test_trunk_shape_mismatch_names_the_tensor(tmp_path: Path):
    from xfer.checkpoints import CheckpointError, trunk_check

    _lightning_like_ckpt(tmp_path / "narrow.ckpt", [16, 32, 64, 128])
    state = torch.load(tmp_path / "narrow.ckpt", weights_only=True)["state_dict"]
    with pytest.raises(CheckpointError) as err:
        trunk_check(_compose(["experiment=img2txt"]), state, tmp_path / "narrow.ckpt")
    assert ("trunk.blocks.0.conv.weight is [16, 32, 3, 3] in the checkpoint but [32, 32, 3, 3] in the "
            "configured trunk") in str(err.value)


def test_a_cached_trunk_that_does_not_fit_is_one_line():
    from xfer.cache import CacheError
    from xfer.models.trunks import CNNTrunk
    from xfer.checkpoints import load_trunk

    cached = {f"trunk.{k}": v for k, v in CNNTrunk(32, [32, 64, 128]).state_dict().items()}
    with pytest.raises(CacheError, match="the cached source model has 3 trunk blocks, the configured trunk has 4"):
        load_trunk(CNNTrunk(32, [32, 64, 128, 128]), cached)
    cached = {f"trunk.{k}": v for k, v in CNNTrunk(32, [16, 64, 128, 128]).state_dict().items()}
    with pytest.raises(CacheError, match=r"trunk.blocks.0.conv.weight is \[16, 32, 3, 3\] in the cached source model"):
        load_trunk(CNNTrunk(32, [32, 64, 128, 128]), cached)


def test_eval_of_a_checkpoint_that_does_not_fit_is_one_line(home: Path, tmp_path: Path, reference_run: Path):
    _lightning_like_ckpt(tmp_path / "three.ckpt", [32, 64, 128])
    proc = run_train_in_process([f"ckpt_path={tmp_path / 'three.ckpt'}", f"config={reference_run}/.hydra/config.yaml"],
                                home, check=False, script="eval.py")
    _one_line_error(proc, "three.ckpt does not fit", "3 trunk blocks", code=2)


# -- NaN -------------------------------------------------------------------------------------------
def test_a_nan_loss_stops_a_run_with_one_line(home: Path):
    proc = run_train_in_process(["experiment=img2txt", *QUICK, "optim.lr=1e30"], home, check=False)
    _one_line_error(proc, "non-finite training loss", "lower the learning rate", code=1)
    [path] = results_files(home)
    failed = load_results(path)
    assert failed["status"] == "failed" and failed["error_type"] == "NonFiniteLossError"


@pytest.mark.slow  # the single-run NaN test stays fast; make test-full
def test_a_nan_loss_fails_only_its_job_in_a_sweep(home: Path):
    proc = run_train(["-m", "experiment=img2txt", *QUICK, "optim.lr=0.003,1e30"], home, check=False)
    assert proc.returncode == 1 and "error: 1 of 2 sweep jobs did not finish" in proc.stderr
    runs = {r.get("error_type", "ok"): r for r in map(load_results, results_files(home))}
    assert set(runs) == {"ok", "NonFiniteLossError"}, runs
    assert runs["ok"]["status"] == "ok"
    assert runs["NonFiniteLossError"]["status"] == "failed"
    assert "non-finite training loss" in runs["NonFiniteLossError"]["error"]


# -- evaluation ------------------------------------------------------------------------------------
def test_eval_reproduces_the_runs_test_accuracy(reference_run: Path, shared_home: Path, tmp_path: Path):
    before = _hashes(reference_run)
    out = tmp_path / "eval.json"
    proc = run_train_in_process([f"ckpt_path={reference_run}/checkpoints/target/best.ckpt", f"out={out}",
                                 "threads=1"], shared_home, script="eval.py")
    assert "test acc" in proc.stdout
    evaluated = json.loads(out.read_text())
    recorded = load_results(reference_run / "results.json")["target"]["test"]
    assert abs(evaluated["test"]["test/acc"] - recorded["test/acc"]) < 0.001
    assert abs(evaluated["test"]["test/f1"] - recorded["test/f1"]) < 0.001
    run = load_results(reference_run / "results.json")
    assert evaluated["n_test"] == run["target"]["sizes"]["test"] == 1272  # the movie split's test set
    assert _hashes(reference_run) == before  # eval writes nothing into the run folder


@pytest.mark.parametrize("args,needles,runner", [
    (["ckpt_path=/no/such/best.ckpt"], ["/no/such/best.ckpt: no such checkpoint file"], run_train_in_process),
    (["checkpoint=x.ckpt"], ["checkpoint=x.ckpt: not an option", "ckpt_path=..."], run_train_in_process),
    ([], ["ckpt_path=<run>/checkpoints/target/best.ckpt is required"], run_train),  # a real eval.py process
], ids=["no_such_file", "unknown_option", "nothing"])
def test_eval_bad_input_is_one_line(home: Path, args: list[str], needles: list[str], runner):
    proc = runner(args, home, check=False, script="eval.py")
    _one_line_error(proc, *needles, code=2)


# -- faults of the machine (issue 18) ---------------------------------------------------------------
def test_an_absent_accelerator_is_one_line(monkeypatch):
    """trainer.accelerator must name a device this machine has (here: as if it had a CPU only)."""
    import xfer.machine as machine
    from omegaconf import OmegaConf

    monkeypatch.setattr(machine, "accelerators_here", lambda: ["cpu"])
    for accelerator, needle in [("gpu", "no CUDA GPU or Apple MPS device is visible on this machine"),
                                ("cuda", "no CUDA GPU is visible on this machine"),
                                ("mps", "Apple's MPS device is not available on this machine")]:
        with pytest.raises(ConfigError, match=re.escape(f"trainer.accelerator={accelerator}: {needle}") +
                           r".*; allowed here: cpu \(or auto\)$"):
            machine.check_accelerator(OmegaConf.create({"accelerator": accelerator, "devices": 1}))
    with pytest.raises(ConfigError, match=r"trainer.accelerator=gpux: not an accelerator; allowed: auto, cpu, cuda, "
                                          r"gpu, mps, tpu \(this machine: cpu\)"):
        machine.check_accelerator(OmegaConf.create({"accelerator": "gpux"}))
    for fine in ("cpu", "auto", "CPU"):
        machine.check_accelerator(OmegaConf.create({"accelerator": fine, "devices": 2}))
    # one GPU here, trainer=ddp asks for 2
    monkeypatch.setattr(machine, "accelerators_here", lambda: ["cpu", "gpu", "cuda"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"trainer.devices=2: this machine has 1 CUDA GPU; allowed here: 1..1, "
                                          r"-1 \(all of them\) or auto"):
        machine.check_accelerator(OmegaConf.create({"accelerator": "gpu", "devices": 2}))
    machine.check_accelerator(OmegaConf.create({"accelerator": "cuda", "devices": 1}))


def test_trainer_gpu_without_a_gpu_fails_at_load(home: Path, monkeypatch, capsys, caplog):
    import xfer.machine as machine

    if torch.cuda.is_available():  # this machine has one: as if it had none
        monkeypatch.setattr(machine, "accelerators_here", lambda: ["cpu"])
    with pytest.raises(RunFailed) as stop:
        run_in_process(["experiment=img2txt", *QUICK, "trainer=gpu"], home)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: trainer.accelerator=gpu: no CUDA GPU or Apple MPS device is visible on this "
                           "machine") and line.endswith("; allowed here: cpu (or auto)"), line
    assert "source stage: training" not in caplog.text  # checked before the source stage
    assert not (home / "cache").exists()


def test_a_csv_with_a_single_class_is_one_line(home: Path, tmp_path: Path, capsys, caplog):
    csv = tmp_path / "one_class.csv"
    csv.write_text("text,label\n" + "".join(f"review number {i} of a film,pos\n" for i in range(60)))
    with pytest.raises(RunFailed) as stop:
        run_in_process(["experiment=img2txt", *QUICK, "target=csv", f"target.reader.path={csv}"], home)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line == ("error: data set 'csv' has only one class, 'pos'; a classification task needs at least two "
                    "classes (check target.reader.label_column and the file)"), line
    assert "source stage: training" not in caplog.text  # found when the target data loads, before training
    [path] = results_files(home)
    assert load_results(path)["status"] == "failed" and load_results(path)["error_type"] == "DataError"


def _read_only(folder: Path) -> list[str] | None:
    """A command prefix under which ``folder`` cannot be written, or None where this machine cannot make one.
    Not root: chmod 0555 (EACCES). Root ignores file modes, so there a read-only bind mount of ``folder`` in
    a private mount namespace (EROFS, the issue's case) stands in for the chmod."""
    if os.geteuid() != 0:
        for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
            sub.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        return None
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), "touch", str(folder / "probe")],
                           capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        return None
    return ["unshare", "-m", "sh", "-c", script, str(folder)]


def _earlier_work(home: Path) -> dict[str, str]:
    """A results.json and a trunk cache entry that were in the home before: their hashes."""
    from xfer.cache import TrunkCache

    earlier = home / "logs" / "img2txt" / "runs" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text(json.dumps({"status": "ok", "seed": 0}))
    TrunkCache(home / "cache" / "trunks").store("k0", {"trunk.w": torch.ones(3)}, {"key": "k0"})
    return _hashes(home)


def _earlier_work_loads(home: Path) -> None:
    from xfer.cache import TrunkCache

    assert load_results(home / "logs" / "img2txt" / "runs" / "earlier" / "results.json")["status"] == "ok"
    assert torch.equal(TrunkCache(home / "cache" / "trunks").load("k0")[0]["trunk.w"], torch.ones(3))


def test_a_read_only_home_is_one_line_before_anything_trains(tmp_path: Path):
    home = tmp_path / "home"
    before = _earlier_work(home)
    prefix = _read_only(home)
    if prefix is None:
        pytest.skip("running as root without unshare/mount: no way to make a folder read-only here")
    try:
        env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([*prefix, sys.executable, str(ROOT / "train.py"), "experiment=img2txt", *QUICK],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for sub in [home, *(p for p in home.rglob("*") if p.is_dir())]:
            sub.chmod(0o755)
    reason = "permission denied" if os.geteuid() != 0 else "a read-only file system"
    _one_line_error(proc, f"cannot write to {home / 'logs' / 'img2txt' / 'runs'} ({reason})",
                    "choose a writable home with XFER_HOME=<folder> or paths.root_dir=<folder>",
                    code=2)
    assert "source stage: training" not in proc.stdout + proc.stderr
    assert _hashes(home) == before
    _earlier_work_loads(home)


def test_a_file_in_place_of_the_home_or_the_cache_is_one_line(tmp_path: Path, home: Path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file, not a folder\n")
    proc = run_train(["experiment=img2txt", *QUICK], blocker, check=False)  # XFER_HOME=<a file>
    _one_line_error(proc, f"cannot write to {blocker} (it is a file, not a folder)", "XFER_HOME=<folder>", code=2)
    assert blocker.read_text() == "a file, not a folder\n"
    # the trunk cache alone (paths.cache_dir): checked before the source stage, not when it stores the trunk
    with pytest.raises(RunFailed) as stop:
        run_in_process(["experiment=img2txt", *QUICK, f"paths.cache_dir={blocker}/trunks"], home)
    assert stop.value.code == 2
    [path] = results_files(home)
    assert f"paths.cache_dir={blocker}/trunks: cannot write to {blocker} (it is a file, not a folder)" in \
        load_results(path)["error"]


# Two target epochs and no source stage: long enough to stop in epoch 2, short enough for a fast test.
INTERRUPTIBLE = ["experiment=img2txt", "strategy=scratch", "trainer.max_epochs=2", "target.fraction=0.2",
                 "trainer.limit_val_batches=2", "threads=1", "trainer.enable_progress_bar=false"]


def test_a_folder_without_write_permission_is_one_line(tmp_path: Path, monkeypatch):
    """What chmod 0555 does to a user who is not root (simulated: these tests may run as root): EACCES from
    the trunk cache's write check, and from Hydra making the run folder."""
    import errno

    import xfer.machine as machine

    def refused(dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/.xfer-write-check.x.tmp")

    monkeypatch.setattr(machine.tempfile, "mkstemp", refused)
    (tmp_path / "cache").mkdir()
    with pytest.raises(ConfigError, match=re.escape(
            f"paths.cache_dir={tmp_path}/cache/trunks: cannot write to {tmp_path}/cache (permission denied); "
            "choose a writable home with XFER_HOME=<folder> or paths.root_dir=<folder> or paths.cache_dir=<folder>")):
        machine.check_writable(tmp_path / "cache" / "trunks", "paths.cache_dir")
    assert machine.unwritable(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "logs" / "x"))) == (
        f"cannot write to {tmp_path} (permission denied); choose a writable home with XFER_HOME=<folder> or "
        "paths.root_dir=<folder>")
    assert machine.unwritable(OSError(errno.EIO, "I/O error", str(tmp_path))) is None  # not a question of rights


class _FullDisk:
    """A file whose writes fail half-way with ENOSPC, as on a full disk."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data: bytes) -> int:
        self.fh.write(data[:len(data) // 2])
        self.fh.flush()
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(home: Path, monkeypatch, capsys):
    """ENOSPC while the target stage writes its second last.ckpt: the one of epoch 1 is still whole."""
    import xfer.io

    real_fdopen, writes = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if f"{os.sep}target{os.sep}.last.ckpt." in name:
            writes.append(name)
            if len(writes) == 2:
                return _FullDisk(fh)
        return fh

    monkeypatch.setattr(xfer.io.os, "fdopen", fdopen)
    with pytest.raises(RunFailed) as stop:
        run_in_process(INTERRUPTIBLE, home)
    monkeypatch.undo()
    assert stop.value.code == 1 and len(writes) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [run] = _run_dirs(home)
    last = run / "checkpoints" / "target" / "last.ckpt"
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: no space left on the device to write {re.escape(str(last))} \(\d+\.\d MB\): "
                        rf"{re.escape(str(last.parent))} has \d+\.\d [kMGT]B free of \d+\.\d [kMGT]B; free some space, "
                        r"or choose a home on another disk with XFER_HOME=<folder> or paths.root_dir=<folder>",
                        line), line
    assert torch.load(last, weights_only=True, map_location="cpu")["epoch"] == 0  # epoch 1's, whole
    assert not list(last.parent.glob(".*.tmp"))  # the half-written temp file is gone
    failed = load_results(run / "results.json")
    assert failed["status"] == "failed" and failed["error_type"] == "DiskFullError" and failed["error"] == line[7:]


def test_a_checkpoint_streams_into_a_temp_file_beside_it_and_renames_over_the_old_one(tmp_path, monkeypatch):
    """save_atomic: torch.save writes straight into the temp file (no copy of the checkpoint in memory), the
    old file stays whole until the rename, and the full-disk size counts each tensor's storage once."""
    import xfer.checkpoints as checkpoints

    target = tmp_path / "ckpts" / "last.ckpt"
    target.parent.mkdir()
    target.write_bytes(b"the previous checkpoint")
    weight = torch.arange(12, dtype=torch.float32)
    state = {"state_dict": {"w": weight, "view": weight[:4]}, "optimizer": [{"m": torch.zeros(3, dtype=torch.float64)}]}
    assert checkpoints.tensor_bytes(state) == 12 * 4 + 3 * 8  # the view shares w's storage

    real_save, seen = torch.save, []

    def save(obj, f, *args, **kwargs):
        seen.append((type(f).__name__, os.readlink(f"/proc/self/fd/{f.fileno()}"), target.read_bytes()))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save)
    checkpoints.save_atomic(state, target)
    [(kind, into, before)] = seen
    assert kind == "BufferedWriter" and Path(into).parent == target.parent and Path(into).name.startswith(".last.ckpt.")
    assert before == b"the previous checkpoint"  # untouched while the new one was written
    loaded = torch.load(target, weights_only=True)
    assert torch.equal(loaded["state_dict"]["view"], weight[:4]) and loaded["optimizer"][0]["m"].dtype == torch.float64
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_checkpoint_that_cannot_be_sized_is_still_saved_and_the_rename_is_synced(tmp_path, monkeypatch):
    """tensor_bytes only feeds the full-disk message: a sparse tensor or a structure that holds itself gives
    None, not a failed or endless save; and the folder is fsynced after the rename."""
    import stat

    import xfer.io
    from xfer.checkpoints import save_atomic, tensor_bytes

    looped: dict = {"w": torch.ones(2)}
    looped["self"] = looped
    assert tensor_bytes(looped) == 8
    sparse = {"w": torch.eye(3).to_sparse()}
    assert tensor_bytes(sparse) is None
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real_fsync(fd)

    monkeypatch.setattr(xfer.io.os, "fsync", fsync)
    save_atomic(sparse, tmp_path / "sparse.ckpt")
    assert synced == [False, True]  # the file, then its folder
    assert torch.equal(torch.load(tmp_path / "sparse.ckpt", weights_only=True)["w"].to_dense(), torch.eye(3))


def test_the_first_step_memory_is_read_once_the_optimizer_has_stepped(monkeypatch):
    """StageTimer reads VmRSS after the first optimizer step: the Nth batch under accumulate_grad_batches=N,
    and the first one after the resumed step."""
    from types import SimpleNamespace

    import xfer.callbacks as callbacks

    reads = iter(range(100, 200))
    monkeypatch.setattr(callbacks, "rss_mib", lambda: float(next(reads)))
    for start, accumulate in ((0, 1), (0, 3), (40, 2)):
        timer, trainer = callbacks.StageTimer(), SimpleNamespace(global_step=start)
        timer.on_train_start(trainer, None)
        for batch in range(1, 7):
            trainer.global_step = start + batch // accumulate  # what Lightning counts after the batch
            timer.on_train_batch_end(trainer, None, None, (torch.zeros(2), torch.zeros(2)), batch - 1)
            if batch < accumulate:
                assert timer.first_step_rss_mib is None
        assert timer.first_step_rss_mib is not None and timer.steps == 6
    assert next(reads) == 103  # one read per stage


def test_every_trainer_writes_checkpoints_atomically_unless_the_config_names_its_own_writer(tmp_path):
    from pytorch_lightning.plugins import TorchCheckpointIO
    from pytorch_lightning.plugins.io import AsyncCheckpointIO

    from xfer import build
    from xfer.checkpoints import AtomicCheckpointIO

    trainer = build.trainer(_compose(["experiment=img2txt"]), tmp_path, "target", [])
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    # a wrapping plugin named alone would get Lightning's default writer: it wraps the atomic one instead
    plugin = "pytorch_lightning.plugins.io.AsyncCheckpointIO"
    alone = _compose(["experiment=img2txt", f"+trainer.plugins=[{{_target_: {plugin}}}]"])
    validate(alone)  # the plugin passes the config checks
    wrapped = build.trainer(alone, tmp_path, "target", []).strategy.checkpoint_io
    assert type(wrapped) is AsyncCheckpointIO and type(wrapped.checkpoint_io) is AtomicCheckpointIO
    # a writer the config names stays
    named = "{_target_: pytorch_lightning.plugins.TorchCheckpointIO}"
    nested = _compose(["experiment=img2txt", f"+trainer.plugins=[{{_target_: {plugin}, checkpoint_io: {named}}}]"])
    validate(nested)
    inner = build.trainer(nested, tmp_path, "target", []).strategy.checkpoint_io
    assert type(inner) is AsyncCheckpointIO and type(inner.checkpoint_io) is TorchCheckpointIO


def test_a_full_disk_at_the_trunk_cache_leaves_no_entry(home: Path, monkeypatch, capsys):
    """safetensors reports ENOSPC as text (what the issue saw on a 6 MB tmpfs); no half entry stays."""
    import xfer.cache
    from safetensors import SafetensorError

    def save_file(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 1000)  # a partial file, as a full disk leaves
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(xfer.cache, "save_file", save_file)
    with pytest.raises(RunFailed) as stop:
        run_in_process(["experiment=img2txt", *QUICK], home)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    cache = home / "cache" / "trunks"
    [entry_file] = {Path(m) for m in re.findall(r"to write (\S+) \(", line)}
    assert entry_file.parent.parent == cache and entry_file.name == "source_model.safetensors", line
    assert re.search(r"\(\d+\.\d [kM]B\): .* has \d+\.\d [kMGT]B free of", line), line
    assert list(cache.iterdir()) == [cache / f"{entry_file.parent.name}.lock"]  # no entry, no temp folder
    [path] = results_files(home)
    assert load_results(path)["status"] == "failed" and load_results(path)["error_type"] == "DiskFullError"


def test_a_sweep_that_would_fill_the_disk_stops_before_its_first_job(tmp_path: Path, monkeypatch, capsys):
    """The sweep's writes are estimated from the experiment's newest finished run (its folder's size) times
    the jobs still to run; more than the free space is one line, exit 2, before any job; without a finished
    run to go by, or with room, the sweep starts."""
    from omegaconf import OmegaConf

    import xfer.machine as machine
    from xfer.hydra_callbacks import SummarizeSweep, sweep_jobs
    from xfer.main import main

    logs = tmp_path / "logs"
    run = logs / "img2img" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"status": "ok"}))
    (run / "checkpoints.bin").write_bytes(b"\0" * 1_000_000)
    failed = logs / "img2img" / "runs" / "r2"  # a failed run is no guide
    failed.mkdir()
    (failed / "results.json").write_text(json.dumps({"status": "failed"}))
    assert sweep_jobs(["strategy=a,b,c", "seed=0,1", "target.fraction=0.1"]) == 6
    cfg = OmegaConf.create({"name": "img2img", "paths": {"log_dir": str(logs)},
                            "hydra": {"sweep": {"dir": str(logs / "img2img" / "multiruns" / "new")},
                                      "overrides": {"task": ["strategy=a,b,c", "seed=0,1"]}}})
    real = shutil.disk_usage
    monkeypatch.setattr(machine.shutil, "disk_usage", lambda p: real(p)._replace(free=5_000_000))
    with pytest.raises(SystemExit) as stop:
        SummarizeSweep().on_multirun_start(cfg)
    assert stop.value.code == 2
    [msg] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    msg = msg.removeprefix("error: ")
    assert msg.startswith("not enough disk for this sweep: 6 jobs need about 6.0 MB (1.0 MB each, as ")
    assert str(run) in msg and "5.0 MB free" in msg and "callbacks.checkpoint.save_last=false" in msg
    monkeypatch.setattr(machine.shutil, "disk_usage", lambda p: real(p)._replace(free=7_000_000))
    SummarizeSweep().on_multirun_start(cfg)  # room enough
    (run / "results.json").write_text(json.dumps({"status": "failed"}))
    monkeypatch.setattr(machine.shutil, "disk_usage", lambda p: real(p)._replace(free=0))
    SummarizeSweep().on_multirun_start(cfg)  # nothing to estimate from: not refused

    # from the command line: one line, exit 2, no job folder
    (run / "results.json").write_text(json.dumps({"status": "ok"}))
    monkeypatch.setenv("XFER_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["train.py"])
    with pytest.raises(SystemExit) as code:
        main(["-m", "experiment=img2img", "strategy=scratch,finetune", f"paths.log_dir={logs}",
              f"hydra.sweep.dir={tmp_path / 'sweep'}", "trainer.fast_dev_run=true"])
    assert code.value.code == 2
    err_lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(err_lines) == 1 and err_lines[0].startswith("error: not enough disk for this sweep: 2 jobs")
    assert not list((tmp_path / "sweep").glob("*/results.json"))


@pytest.mark.slow  # the injected ENOSPC tests above stay fast; make test-full
def test_a_real_full_disk_is_one_line(tmp_path: Path):
    """The issue's case, where this machine can make it: the home on a 6 MB tmpfs (root, a private mount
    namespace). The trunk cache entry (1 MB) is the write that no longer fits."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    home = tmp_path / "tiny"
    home.mkdir()
    script = 'mount -t tmpfs -o size=6m tmpfs "$0" && cd "$0" && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, str(home), "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
    env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    check = "; ".join(['import json, pathlib, sys', 'home = pathlib.Path(sys.argv[1])',
                       'print(json.dumps({"tmp": [str(p) for p in home.rglob("*.tmp")], '
                       '"cache": sorted(p.name for p in (home / "cache" / "trunks").iterdir()), '
                       '"results": [json.loads(p.read_text()) for p in home.rglob("results.json")]}))'])
    # train, then look inside the tmpfs before the namespace (and the tmpfs) goes away
    proc = subprocess.run(["unshare", "-m", "sh", "-c",
                           f'mount -t tmpfs -o size=6m tmpfs "$0" && "$@"; echo "exit=$?" >&2; '
                           f'{shlex.quote(sys.executable)} -c {shlex.quote(check)} "$0"', str(home),
                           sys.executable, str(ROOT / "train.py"), "experiment=img2txt", *QUICK],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "exit=1", proc.stderr[-3000:]
    failed = subprocess.CompletedProcess(proc.args, 1, proc.stdout, "\n".join(lines[:-1]))
    line = _one_line_error(failed, "error: no space left on the device to write "
                                   f"{home}/cache/trunks/", "/source_model.safetensors (", "free of 6.", code=1)
    inside = json.loads(proc.stdout.strip().splitlines()[-1])
    assert inside["tmp"] == [] and all(name.endswith(".lock") for name in inside["cache"]), inside
    [results] = inside["results"]
    assert results["status"] == "failed" and results["error"] == line[len("error: "):]


def _wait_then_signal(proc: subprocess.Popen, home: Path, sig: int, timeout: float = 300) -> Path:
    """Send ``sig`` once the target stage has written its first last.ckpt (it is then in epoch 2); the run folder."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        runs = _run_dirs(home)
        if runs and (runs[0] / "checkpoints" / "target" / "last.ckpt").exists():
            time.sleep(0.05)
            proc.send_signal(sig)
            return runs[0]
        time.sleep(0.005)
    raise AssertionError(f"the run ended before the target stage could be interrupted: {proc.returncode}")


def test_sigterm_in_the_target_stage_exits_143_and_resume_last_finishes(home: Path):
    env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    args = INTERRUPTIBLE
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = _wait_then_signal(proc, home, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    line = _one_line_error(done, "interrupted by SIGTERM in the target stage, epoch 2 of 2 (1 finished",
                           f"continue with: python train.py resume={run}", code=143)
    stopped = load_results(run / "results.json")
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM"
    assert (stopped["stage"], stopped["epoch"], stopped["epochs_done"], stopped["max_epochs"]) == ("target", 2, 1, 2)
    assert stopped["resume"] == f"python train.py resume={run}" and stopped["error"] == line[len("error: "):]
    assert stopped["last_checkpoint"] == str(run / "checkpoints" / "target" / "last.ckpt")
    before = _hashes(run)

    resumed = run_in_process([*args, "resume=last"], home)  # resume=last picks the interrupted run
    assert resumed["status"] == "ok"
    assert resumed["resumed_from"]["run_dir"] == str(run) and resumed["resumed_from"]["epoch"] == 0
    final = Path(resumed["run_dir"]) / "checkpoints" / "target" / "last.ckpt"
    assert torch.load(final, weights_only=True, map_location="cpu")["epoch"] == 1  # both epochs
    assert _hashes(run) == before  # the interrupted run's folder is only read


def test_ctrl_c_in_the_target_stage_exits_130_with_results(home: Path, capsys):
    """SIGINT in-process (the run's main thread gets KeyboardInterrupt, as under a terminal's Ctrl-C)."""
    stop_sent: list[Path] = []

    def interrupter() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not stop_sent:
            runs = _run_dirs(home)
            if runs and (runs[0] / "checkpoints" / "target" / "last.ckpt").exists():
                time.sleep(0.05)  # past the epoch end that wrote it (its counter advances after the callbacks)
                stop_sent.append(runs[0])
                os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.005)

    thread = threading.Thread(target=interrupter, daemon=True)
    thread.start()
    try:
        with pytest.raises(RunFailed) as stop:
            run_in_process(INTERRUPTIBLE, home)
    finally:
        stop_sent.append(Path("."))  # ends the thread if the run ended first
        thread.join(timeout=10)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT after the first
    assert stop.value.code == 130
    run = stop_sent[0]
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: interrupted by SIGINT in the target stage, epoch 2 of 2 (1 finished"), line
    stopped = load_results(run / "results.json")
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGINT" and stopped["epochs_done"] == 1


def test_an_interrupted_run_is_not_counted_as_finished(tmp_path: Path):
    """The summary takes every status but ok for a run that did not finish: an interrupted job is counted
    with the failed ones (n=0, failed=1) and listed with its line."""
    from xfer.report.summary import summarize

    job = tmp_path / "sweep" / "0_finetune_f1.0_s0"
    job.mkdir(parents=True)
    (job / "results.json").write_text(json.dumps({
        "status": "interrupted", "run_dir": str(job), "seed": 0, "strategy": {"name": "finetune"}, "fraction": 1.0,
        "error": "interrupted by SIGTERM in the target stage, epoch 2 of 3"}))
    s = summarize(tmp_path / "sweep")
    assert not s.runs and [r["status"] for r in s.failed] == ["interrupted"]
    assert [(g.strategy, g.n, g.failed) for g in s.groups] == [("finetune", 0, 1)]


# -- memory a setting makes a run allocate, checked at load (issue 18) ------------------------------
_MEMORY_LINE = (r" needs about [\d.]+ [kMGT]B of memory, but [\d.]+ [kMGT]B is available \([^)]*; a run may take 80% "
                r"of it\); allowed here: ")


def _memory_error(capsys, stop: pytest.ExceptionInfo, caplog) -> str:
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "source stage: training" not in caplog.text  # found when the target data load, before training
    return err.strip().splitlines()[-1]


def test_a_max_len_too_large_for_memory_is_one_line_before_allocating(home: Path, capsys, caplog):
    """target.max_len=100000000 on rt_sentiment: the kernel's OOM killer (exit 137, no message) before."""
    import xfer.pipeline  # noqa: F401 - imported before the clock starts (torch and Lightning take seconds)

    start = time.perf_counter()
    with pytest.raises(RunFailed) as stop:
        run_in_process(["experiment=img2txt", *QUICK, "target.max_len=100000000"], home)
    took = time.perf_counter() - start
    line = _memory_error(capsys, stop, caplog)
    assert re.fullmatch(r"error: target.max_len=100000000: [\d,]+ texts x 100,000,000 tokens \(int64 ids, and the "
                        r"tokenizer's encodings of 1024 texts\)" + _MEMORY_LINE + r"target.max_len <= [\d,]+", line), line
    assert took < 4, took  # the config, the data read, the estimate (0.7 s here): nothing that size is allocated
    [path] = results_files(home)
    assert load_results(path)["status"] == "failed" and load_results(path)["error_type"] == "ConfigError"


def test_an_embedding_or_an_image_size_too_large_for_memory_is_one_line(home: Path, capsys, caplog):
    with pytest.raises(RunFailed) as stop:
        run_in_process(["experiment=img2txt", *QUICK, "target_adapter.embed_dim=100000000"], home)
    line = _memory_error(capsys, stop, caplog)
    assert re.fullmatch(r"error: target_adapter.embed_dim=100000000 \(adapter 'text_fold', a vocabulary of [\d,]+ "
                        r"words in 'rt_sentiment'\): an embedding of [\d,]+ x 100,000,000 float32 weights that train "
                        r"\(with their gradient and the optimizer's two moments\)" + _MEMORY_LINE +
                        r"embed_dim <= [\d,]+ for this vocabulary, or a smaller vocab_size", line), line
    with pytest.raises(RunFailed) as stop:
        run_in_process(["experiment=img2img", *QUICK, "target.image_size=[100000,100000]"], home)
    line = _memory_error(capsys, stop, caplog)
    assert re.fullmatch(r"error: target.image_size=\[100000, 100000\]: [\d,]+ images of 1 x 100,000 x 100,000 "
                        r"\(uint8, and the float copies made while resizing and measuring their mean and std\)" +
                        _MEMORY_LINE + r"target.image_size=\[H, W\] with H x W <= [\d,]+ pixels", line), line


def test_memory_estimates_let_the_shipped_settings_through_on_a_small_machine(monkeypatch, tmp_path: Path):
    """On a 4 GB machine every shipped data set at its own settings passes (the largest, yelp: 650,000 texts
    x 128 tokens; cifar10; mnist5k resized to 224 x 224 as imagenet2img does), and far larger settings
    do not. Where MemAvailable is missing, free physical memory stands in; a cgroup limit lowers it."""
    import numpy as np

    import xfer.machine as machine
    from xfer.data import ImageDataModule, text
    from xfer.data.spec import DataSpec
    from xfer.models.adapters import TextFoldAdapter, TextGridAdapter

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       8000000 kB\nMemAvailable:   3906250 kB\n")
    assert machine.available_memory(meminfo, tmp_path / "none") == (4_000_000_000, "MemAvailable")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("3000000000\n")
    (cgroup / "memory.current").write_text("1000000000\n")
    assert machine.available_memory(meminfo, cgroup) == (2_000_000_000, "left under the cgroup memory limit")
    (cgroup / "memory.max").write_text("max\n")  # no limit
    assert machine.available_memory(meminfo, cgroup)[0] == 4_000_000_000
    free, where = machine.available_memory(tmp_path / "no_meminfo", tmp_path / "none")
    assert free > 0 and where == "free physical memory"

    monkeypatch.setattr(machine, "available_memory", lambda: (4_000_000_000, "MemAvailable"))
    for rows, max_len in [(12_808, 48), (650_000, 128), (50_000, 256), (630_000, 64), (18_821, 128)]:
        text.check_memory({"train": [""] * rows}, max_len)
        with pytest.raises(ConfigError, match=rf"target.max_len={1000 * max_len}: {rows:,} texts"):
            text.check_memory({"train": [""] * rows}, 1000 * max_len)
    spec = DataSpec("yelp", "text", 5, vocab_size=30_000, seq_len=128)
    TextFoldAdapter(spec, 32, embed_dim=64)
    TextGridAdapter(spec, 32, embed_dim=32)
    with pytest.raises(ConfigError, match=r"embed_dim=10000 \(adapter 'text_fold', a vocabulary of 30,000 words"):
        TextFoldAdapter(spec, 32, embed_dim=10_000)

    def shaped(*shape: int) -> np.ndarray:  # an array of that shape that takes no memory
        return np.broadcast_to(np.zeros((), np.uint8), shape)

    for size, splits in [(None, {"train": (4000, 28, 28), "val": (500, 28, 28), "test": (500, 28, 28)}),
                         (None, {"train": (45_000, 3, 32, 32), "val": (5000, 3, 32, 32), "test": (10_000, 3, 32, 32)}),
                         ((224, 224), {"train": (4000, 28, 28), "val": (500, 28, 28), "test": (500, 28, 28)})]:
        dm = ImageDataModule("mnist5k", image_size=size)
        dm.check_memory({s: shaped(*shape) for s, shape in splits.items()})
    with pytest.raises(ConfigError, match=r"target.image_size=\[2240, 2240\]: 5,000 images of 1 x 2,240 x 2,240"):
        ImageDataModule("mnist5k", image_size=(2240, 2240)).check_memory(
            {"train": shaped(4000, 28, 28), "val": shaped(500, 28, 28), "test": shaped(500, 28, 28)})
    monkeypatch.setattr(machine, "available_memory", lambda: None)  # unknown: nothing is refused
    text.check_memory({"train": [""] * 10}, 10**12)


def test_a_one_value_strategy_key_beside_a_strategy_sweep_says_to_write_choice(home: Path):
    """Hydra composes a multirun with the default strategy before any job picks its own, so strategy.k=2
    beside strategy=a,b fails there; the error says how to apply it per job. Nothing is written."""
    proc = run_train(["-m", "experiment=img2img", "strategy=freeze_first_k,transfer_first_k", "strategy.k=2"],
                     home, check=False)
    _one_line_error(proc, "strategy.k is not a known key of the default strategy", "write strategy.k=choice(2)",
                    code=2)
    assert not (home / "logs").exists() or not list((home / "logs").rglob("results.json"))
    proc = run_train(["experiment=img2img", "strategy=finetune", "strategy.k=2"], home, check=False)
    _one_line_error(proc, "strategy.k is not a known key of the chosen strategy", code=2)
