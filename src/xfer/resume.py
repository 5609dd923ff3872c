"""Resuming: ``resume=<run folder>``, ``resume=last`` / ``ckpt_path=last`` or ``ckpt_path=<file>``.

Before Hydra composes the config, ``xfer.argv.expand_resume`` brings a ``resume=<run folder>``'s
command-line overrides. ``find_resume`` then turns the choice into a checkpoint inside *this* run's
folder: the earlier run's ``last.ckpt`` (and its ``best.ckpt``) are copied here, and the copy's
checkpoint-callback state is re-pointed at this folder, so best-model tracking carries over and
nothing in the earlier folder is ever written, replaced or deleted. The one exception is a resumed
sweep (``-m ... resume=last``), whose jobs go back to their own folders (``xfer.sweep_resume``): there
a job trains on from its own last.ckpt.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from xfer.checkpoints import first_line, load_checkpoint, run_dir_of, state_mismatch, trunk_check
from xfer.errors import CheckpointError, ConfigError
from xfer.io import atomic_write_bytes
from xfer.runtime import is_multirun
from xfer.schema import show
from xfer.sweep_resume import earlier_config, is_free

log = logging.getLogger(__name__)
TARGET_CKPT = Path("checkpoints") / "target"


@dataclass
class Resume:
    checkpoint: Path        # the checkpoint resumed from (never modified)
    run_dir: Path | None    # the earlier run's folder, when the checkpoint sits in one
    ckpt_path: Path         # the copy in this run's folder that Trainer.fit starts from
    state: dict[str, torch.Tensor]
    epoch: int

    def check_fits(self, module: torch.nn.Module) -> None:
        mismatch = state_mismatch(module.state_dict(), self.state)
        if mismatch:
            raise CheckpointError(f"checkpoint {self.checkpoint} does not fit the configured model: {mismatch}")

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "run_dir": None if self.run_dir is None else str(self.run_dir),
                "epoch": self.epoch}


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_difference(cfg: DictConfig, run_dir: Path, saved: Path | None = None) -> str | None:
    """The first setting (other than paths and display) in which ``cfg`` differs from the config saved in
    ``run_dir`` (or the file ``saved``), as a phrase; None when they agree."""
    saved = run_dir / ".hydra" / "config.yaml" if saved is None else saved
    try:
        old = flat(OmegaConf.to_container(OmegaConf.load(saved), resolve=False))
    except Exception as err:  # noqa: BLE001
        return f"its config {saved} is unreadable ({first_line(err)})"
    new = flat(OmegaConf.to_container(cfg, resolve=False))
    unset = object()  # a setting only one of the two configs has (added with +key, dropped with ~key)
    for key in sorted(set(old) | set(new)):
        here, there = new.get(key, unset), old.get(key, unset)
        if not is_free(key) and here != there:
            return (f"{key} is {'unset' if here is unset else show(here)} here but "
                    f"{'unset' if there is unset else show(there)} there")
    return None


def candidates(cfg: DictConfig, run_dir: Path) -> list[Path]:
    """Earlier run folders of this experiment (single runs and sweep jobs) with a target last.ckpt,
    newest first."""
    root = Path(str(cfg.paths.log_dir)) / str(cfg.name)
    here = run_dir.resolve()
    found = [p.parents[2] for pattern in ("runs/*/checkpoints/target/last.ckpt",
                                           "multiruns/*/*/checkpoints/target/last.ckpt")
             for p in root.glob(pattern)]
    found = [d for d in found if d.resolve() != here and (d / ".hydra" / "config.yaml").is_file()]
    return sorted(found, key=lambda d: (d / TARGET_CKPT / "last.ckpt").stat().st_mtime, reverse=True)


def find_resume(cfg: DictConfig, run_dir: Path, trunk: torch.nn.Module | None = None) -> Resume | None:
    """The checkpoint this run continues from (copied into ``run_dir``), or None for a fresh run.

    ``resume=<run folder>``: that run's target last.ckpt. ``resume=last`` or ``ckpt_path=last``: the
    newest earlier run of this experiment with the same settings (in a sweep, a job with none starts
    afresh). ``ckpt_path=<file>``: that file.
    The settings must match the earlier run's (paths, threads and display aside)."""
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume is not None and ckpt_path is not None and str(resume) != str(ckpt_path):
        raise ConfigError(f"resume={resume} and ckpt_path={ckpt_path}: give one of them")
    wanted = str(resume if resume is not None else ckpt_path) if (resume or ckpt_path) else None
    if wanted is None:
        return None
    key = "resume" if resume is not None else "ckpt_path"
    if wanted == "last":
        return _resume_last(cfg, run_dir, key, trunk)
    path = Path(wanted).expanduser()
    if path.is_dir():
        if not (path / ".hydra" / "config.yaml").is_file():
            raise ConfigError(f"{key}={wanted}: not a run folder (it has no .hydra/config.yaml)")
        ckpt = path / TARGET_CKPT / "last.ckpt"
        if not ckpt.is_file():
            log.warning("resume: %s has no target checkpoint (it stopped before or during the source "
                        "stage); starting the target stage from the beginning", path)
            return None
        return _adopt(cfg, ckpt, path, run_dir, key, trunk)
    if not path.is_file():
        raise ConfigError(f"{key}={wanted}: no such run folder or checkpoint file")
    return _adopt(cfg, path, run_dir_of(path), run_dir, key, trunk)


def _resume_last(cfg: DictConfig, run_dir: Path, key: str, trunk: torch.nn.Module | None) -> Resume | None:
    own = run_dir / TARGET_CKPT / "last.ckpt"
    if is_multirun() and own.is_file():  # a resumed sweep sent this job back to its folder (xfer.sweep_resume)
        return _continue_here(cfg, own, run_dir, key, trunk)
    found = candidates(cfg, run_dir)
    for earlier in found:
        if config_difference(cfg, earlier) is None:
            return _adopt(cfg, earlier / TARGET_CKPT / "last.ckpt", earlier, run_dir, key, trunk)
    where = Path(str(cfg.paths.log_dir)) / str(cfg.name)
    if is_multirun():  # resuming a sweep: a job that never got a checkpoint starts afresh
        log.warning("%s=last: no earlier run under %s has these settings; starting afresh", key, where)
        return None
    if not found:
        raise ConfigError(f"{key}=last: no earlier run under {where} has a target checkpoint; "
                          f"start a new run without {key}=")
    raise ConfigError(f"{key}=last: none of the {len(found)} earlier runs under {where} has these settings "
                      f"(the newest, {found[0].name}: {config_difference(cfg, found[0])}); "
                      f"give the same settings, or resume=<run folder>")


def _continue_here(cfg: DictConfig, ckpt: Path, run_dir: Path, key: str, trunk: torch.nn.Module | None) -> Resume:
    """A sweep job's earlier attempt in this very folder: train on from its last.ckpt, which stays where it
    is (the next epoch's end replaces it, as in a run never stopped). Its settings are those of the attempt
    (``.hydra/attempt_<n>/config.yaml``, kept before Hydra rewrote ``.hydra/``)."""
    diff = config_difference(cfg, run_dir, earlier_config(run_dir))
    if diff:
        raise ConfigError(f"{key}=last: the earlier attempt of this sweep job in {run_dir} had other settings "
                          f"({diff}); rerun the sweep with its settings, or without {key}= in a new folder")
    data = load_checkpoint(ckpt)
    trunk_check(cfg, data["state_dict"], ckpt, trunk)
    log.info("resume: continuing %s (epoch %s) in its own folder", ckpt, data.get("epoch"))
    return Resume(ckpt, run_dir, ckpt, dict(data["state_dict"]), int(data.get("epoch", 0)))


def _adopt(cfg: DictConfig, ckpt: Path, earlier: Path | None, run_dir: Path, key: str,
           trunk: torch.nn.Module | None) -> Resume:
    if earlier is not None:
        if earlier.resolve() == run_dir.resolve():
            raise ConfigError(f"{key}={ckpt}: that is this run's own folder")
        diff = config_difference(cfg, earlier)
        if diff:
            raise ConfigError(f"{key}: this run does not have the settings of {earlier} ({diff}); a resumed "
                              f"run must keep them (resume=<run folder> reuses its overrides)")
    data = load_checkpoint(ckpt)
    trunk_check(cfg, data["state_dict"], ckpt, trunk)
    dest = Path(os.path.realpath(run_dir / TARGET_CKPT))
    copy = _repoint(data, ckpt, dest)
    log.info("resume: continuing %s (epoch %s) in %s", ckpt, data.get("epoch"), run_dir)
    return Resume(ckpt, earlier, copy, dict(data["state_dict"]), int(data.get("epoch", 0)))


def _move_paths(data: dict[str, Any], dest: Path) -> set[Path]:
    """Re-point every checkpoint callback's paths in ``data`` from its folder to ``dest``; the files
    they named there."""
    named: set[Path] = set()
    for state in (data.get("callbacks") or {}).values():
        if not (isinstance(state, dict) and state.get("dirpath") and "best_model_path" in state):
            continue
        old = Path(str(state["dirpath"]))

        def move(p: Any) -> Any:
            if isinstance(p, str) and p and Path(p).parent == old:
                named.add(Path(p))
                return str(dest / Path(p).name)
            return p

        state["best_k_models"] = {move(k): v for k, v in (state.get("best_k_models") or {}).items()}
        for field in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if field in state:
                state[field] = move(state[field])
        state["dirpath"] = str(dest)
    return named


def _write(data: dict[str, Any], path: Path) -> None:
    buf = io.BytesIO()
    torch.save(data, buf)
    atomic_write_bytes(path, buf.getvalue())


def _repoint(data: dict[str, Any], ckpt: Path, dest: Path) -> Path:
    """Write ``data`` as ``dest/last.ckpt`` with its checkpoint callbacks moved to ``dest``, with the
    other checkpoints they name (best.ckpt) copied and moved alike. Reads the earlier folder only."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "last.ckpt"
    for src in sorted(_move_paths(data, dest)):
        if dest / src.name == out or not src.is_file():
            continue
        other = load_checkpoint(src)  # refuse an unsafe best.ckpt now rather than in Trainer.test
        _move_paths(other, dest)
        _write(other, dest / src.name)
    _write(data, out)
    return out
