"""Saved runs: loading their checkpoints safely, resuming them, and evaluating them again.

* ``load_checkpoint`` reads a Lightning checkpoint with ``torch.load(weights_only=True)``: tensors and
  plain data only. A file that asks to run code on load (a crafted pickle) is refused with one line
  (``CheckpointError``) before anything in it runs; so is a damaged file.
* ``state_mismatch`` names the first difference between a checkpoint's weights and the model the
  config builds (block count, a missing key, a shape), for a one-line error instead of PyTorch's
  wall of missing/unexpected keys.
* ``find_resume`` turns ``resume=<run folder>``, ``resume=last`` / ``ckpt_path=last`` or
  ``ckpt_path=<file>`` into a checkpoint inside *this* run's folder: the earlier run's
  ``last.ckpt`` (and its ``best.ckpt``) are copied here, and the copy's checkpoint-callback state is
  re-pointed at this folder, so best-model tracking carries over and nothing in the earlier folder is
  ever written, replaced or deleted.
* ``evaluate`` rebuilds a run's target model and data from its saved ``.hydra/config.yaml`` and tests
  a checkpoint on the test split (``eval.py``).
"""
from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from xfer.io import atomic_write_bytes
from xfer.schema import ConfigError

log = logging.getLogger(__name__)

# Keys that may differ between a run and its resumption: where things go and how they are shown.
RESUME_FREE = ("paths", "resume", "ckpt_path", "threads", "objective", "eval_test", "hydra",
               "trainer.enable_progress_bar", "trainer.enable_model_summary")
TARGET_CKPT = Path("checkpoints") / "target"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, damaged, or not made for the configured model."""


# -- loading ---------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint as plain data, never running code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        asks = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if asks:
            raise CheckpointError(f"{path} is not a safe checkpoint: loading it would call {asks.group(1)}, which "
                                  f"a checkpoint never needs; refusing to load it") from None
        detail = re.search(r"(Unsupported operand \d+)", text)
        raise CheckpointError(f"{path} is not a readable checkpoint (not written by torch.save, or damaged"
                              f"{': ' + detail.group(1) if detail else ''}); refusing to load it") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged, truncated or another "
                              f"format: {_first_line(err)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    return ckpt


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _n_blocks(state: Mapping[str, Any], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pat.match(k))}
    return len(found)


def state_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, Any],
                   here: str = "the configured model", there: str = "the checkpoint") -> str | None:
    """The first way ``got`` (weights from a file) does not fit ``expected`` (the model's own state),
    trunk first, as a phrase; None when it fits."""
    n_here, n_there = _n_blocks(expected, "trunk.blocks."), _n_blocks(got, "trunk.blocks.")
    if n_here and n_there != n_here:
        return f"{there} has {n_there} trunk blocks, {here} has {n_here}"
    keys = sorted(expected, key=lambda k: (not k.startswith("trunk."), list(expected).index(k)))
    for key in keys:
        if key not in got:
            return f"{key} is in {here} but not in {there}"
        want, have = tuple(expected[key].shape), tuple(getattr(got[key], "shape", ()))
        if want != have:
            return f"{key} is {list(have)} in {there} but {list(want)} in {here}"
    extra = [k for k in got if k not in expected]
    if extra:
        return f"{extra[0]} is in {there} but not in {here}"
    return None


# -- resuming --------------------------------------------------------------------------------------
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


def _free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in RESUME_FREE)


def config_difference(cfg: DictConfig, run_dir: Path) -> str | None:
    """The first setting (other than paths and display) in which ``cfg`` differs from the config saved in
    ``run_dir``, as a phrase; None when they agree."""
    saved = run_dir / ".hydra" / "config.yaml"
    try:
        old = flat(OmegaConf.to_container(OmegaConf.load(saved), resolve=False))
    except Exception as err:  # noqa: BLE001
        return f"its config {saved} is unreadable ({_first_line(err)})"
    new = flat(OmegaConf.to_container(cfg, resolve=False))
    for key in sorted(set(old) & set(new)):
        if not _free(key) and old[key] != new[key]:
            return f"{key} is {_show(new[key])} here but {_show(old[key])} there"
    return None


def _show(v: Any) -> str:
    from xfer.schema import show

    return show(v)


def _run_dir_of(ckpt: Path) -> Path | None:
    """``<run>/checkpoints/<stage>/x.ckpt`` -> ``<run>`` when that folder holds a Hydra config."""
    run = ckpt.resolve().parents[2] if len(ckpt.resolve().parents) > 2 else None
    return run if run is not None and (run / ".hydra" / "config.yaml").is_file() else None


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


def find_resume(cfg: DictConfig, run_dir: Path) -> Resume | None:
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
        return _resume_last(cfg, run_dir, key)
    path = Path(wanted).expanduser()
    if path.is_dir():
        if not (path / ".hydra" / "config.yaml").is_file():
            raise ConfigError(f"{key}={wanted}: not a run folder (it has no .hydra/config.yaml)")
        ckpt = path / TARGET_CKPT / "last.ckpt"
        if not ckpt.is_file():
            log.warning("resume: %s has no target checkpoint (it stopped before or during the source "
                        "stage); starting the target stage from the beginning", path)
            return None
        return _adopt(cfg, ckpt, path, run_dir, key)
    if not path.is_file():
        raise ConfigError(f"{key}={wanted}: no such run folder or checkpoint file")
    return _adopt(cfg, path, _run_dir_of(path), run_dir, key)


def _resume_last(cfg: DictConfig, run_dir: Path, key: str) -> Resume | None:
    from xfer.cli import is_multirun

    found = candidates(cfg, run_dir)
    for earlier in found:
        if config_difference(cfg, earlier) is None:
            return _adopt(cfg, earlier / TARGET_CKPT / "last.ckpt", earlier, run_dir, key)
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


def _adopt(cfg: DictConfig, ckpt: Path, earlier: Path | None, run_dir: Path, key: str) -> Resume:
    if earlier is not None:
        if earlier.resolve() == run_dir.resolve():
            raise ConfigError(f"{key}={ckpt}: that is this run's own folder")
        diff = config_difference(cfg, earlier)
        if diff:
            raise ConfigError(f"{key}: this run does not have the settings of {earlier} ({diff}); a resumed "
                              f"run must keep them (resume=<run folder> reuses its overrides)")
    data = load_checkpoint(ckpt)
    trunk_check(cfg, data["state_dict"], ckpt)
    dest = Path(os.path.realpath(run_dir / TARGET_CKPT))
    copy = _repoint(data, ckpt, dest)
    log.info("resume: continuing %s (epoch %s) in %s", ckpt, data.get("epoch"), run_dir)
    return Resume(ckpt, earlier, copy, dict(data["state_dict"]), int(data.get("epoch", 0)))


def trunk_check(cfg: DictConfig, state: Mapping[str, Any], ckpt: Path) -> None:
    """The configured trunk against a checkpoint's, before anything trains."""
    from hydra.utils import instantiate

    trunk = instantiate(cfg.trunk)
    expected = {f"trunk.{k}": v for k, v in trunk.state_dict().items()}
    mismatch = state_mismatch(expected, {k: v for k, v in state.items() if k.startswith("trunk.")},
                              here="the configured trunk")
    if mismatch:
        raise CheckpointError(f"checkpoint {ckpt} does not fit the configured trunk: {mismatch}")


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


# Trainer.test(ckpt_path="best") uses the first ModelCheckpoint, the best-validation one; LastEveryEpoch
# comes after it, so Lightning's warning about several ModelCheckpoint callbacks says nothing here.
warnings.filterwarnings("ignore", message=r".*configured with multiple `ModelCheckpoint` callbacks.*")


class LastEveryEpoch(ModelCheckpoint):
    """``last.ckpt`` at the end of every epoch. Lightning 2.6 writes ``save_last`` only when the
    monitored checkpoint improves, so without this a resumed run would restart from the best epoch
    instead of the latest one. Runs after the best-checkpoint callback, so its state is current."""

    def __init__(self, dirpath: str | os.PathLike):
        super().__init__(dirpath=str(dirpath), filename="last", monitor=None, save_top_k=1, save_last=False,
                         enable_version_counter=False)


# -- evaluating ------------------------------------------------------------------------------------
def evaluate(ckpt_path: str | os.PathLike, config: str | os.PathLike | None = None) -> dict[str, Any]:
    """Test a saved target model on its run's test split; the model and data come from the run's
    ``.hydra/config.yaml`` (or ``config``)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from xfer import build
    from xfer.cli import register_resolvers
    from xfer.schema import validate

    ckpt = Path(ckpt_path)
    data = load_checkpoint(ckpt)
    run_dir = _run_dir_of(ckpt)
    cfg_file = Path(config) if config else (run_dir / ".hydra" / "config.yaml" if run_dir else None)
    if cfg_file is None or not cfg_file.is_file():
        raise ConfigError(f"no run config for {ckpt}: expected <run>/checkpoints/target/<name>.ckpt next to "
                          f"<run>/.hydra/config.yaml; give one with config=<run>/.hydra/config.yaml")
    register_resolvers()
    cfg = OmegaConf.load(cfg_file)
    validate(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build.datamodule(cfg.target, int(cfg.seed))
    trunk = instantiate(cfg.trunk)
    module = build.model(dm.spec, trunk, cfg.target_adapter, cfg.head, build.to_dict(cfg.optim))
    module.class_names = list(dm.spec.class_names)
    # a joint run's checkpoint also holds the source adapter and head, which testing never uses
    state = {k: v for k, v in data["state_dict"].items() if not k.startswith("extra_parts.")}
    mismatch = state_mismatch(module.state_dict(), state, here=f"the model {cfg_file} builds")
    if mismatch:
        hint = ("; the tokenizer refitted on the training split has another vocabulary: did the data change?"
                if "embedding" in mismatch else "")
        raise CheckpointError(f"checkpoint {ckpt} does not fit: {mismatch}{hint}")
    module.load_state_dict(state, strict=True)

    recorded = _recorded(run_dir)
    sizes = dm.sizes()
    if recorded and recorded.get("target", {}).get("sizes") not in (None, sizes):
        raise CheckpointError(f"the target data rebuilt from {cfg_file} differ from the run's "
                              f"(sizes {sizes} now, {recorded['target']['sizes']} then); did the data change?")
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, fast_dev_run=False)
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {
        "checkpoint": str(ckpt), "epoch": data.get("epoch"), "config": str(cfg_file),
        "run_dir": None if run_dir is None else str(run_dir), "dataset": cfg.target.name,
        "test": {k: float(v) for k, v in tested.items()}, "n_test": len(dm.datasets["test"]),
        "confusion_matrix": module.test_confusion, "class_names": list(dm.spec.class_names),
        "run_test": (recorded or {}).get("target", {}).get("test"),
    }


def _recorded(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None:
        return None
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and results.get("status") == "ok" else None


def eval_lines(out: dict[str, Any]) -> list[str]:
    test = out["test"]
    lines = [f"eval {out['checkpoint']} (epoch {out['epoch']})",
             f"  target  {out['dataset']:<14} test acc {100 * test.get('test/acc', float('nan')):5.1f}%   "
             f"macro-F1 {100 * test.get('test/f1', float('nan')):5.1f}%   (n={out['n_test']})"]
    run_test = out.get("run_test") or {}
    if "test/acc" in run_test and "test/acc" in test:
        delta = test["test/acc"] - run_test["test/acc"]
        lines.append(f"  run     results.json test acc {100 * run_test['test/acc']:5.1f}%   "
                     f"(difference {delta:+.4f})")
    return lines
