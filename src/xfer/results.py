"""results.json, the one record of a run (also of a failed or an interrupted one), and what the console
and TensorBoard show of it. Every field is built here; the pipeline hands over what the stages measured."""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xfer.io import atomic_write_json
from xfer.machine import process_state
from xfer.runtime import choice

FILE = "results.json"


def freezing_name(cfg: DictConfig) -> str:
    """The freezing strategy's name: its config choice (``strategy=lp_ft`` -> ``lp_ft``). Outside Hydra, the
    conf/strategy/ file that names its class, else the snake-case name of the class."""
    chosen = choice("strategy")
    if chosen:
        return str(chosen)
    target = str(OmegaConf.select(cfg, "strategy._target_", default="?"))
    from xfer.argv import CONF_DIR  # outside Hydra: the strategy file whose _target_ this is

    for file in sorted((CONF_DIR / "strategy").glob("*.yaml")):
        if f"_target_: {target}\n" in file.read_text():
            return file.stem
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", target.rsplit(".", 1)[-1]).lower()


def code_version() -> dict[str, Any] | None:
    """The git commit of the code that ran, and whether the checkout had changes: with the command
    (the run's .hydra/overrides.yaml) it names what reproduces a number. None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def _run_fields(cfg: DictConfig, strategy: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run in a sweep, for finished and failed runs alike."""
    return {
        "experiment": cfg.get("name"),
        "strategy": strategy,
        "seed": cfg.get("seed"),
        "split_seed": OmegaConf.select(cfg, "target.split_seed"),
        "eval_test": bool(cfg.get("eval_test", True)),
        "group_column": OmegaConf.select(cfg, "target.group_column"),
        "fraction": OmegaConf.select(cfg, "target.fraction"),
        "samples_per_class": OmegaConf.select(cfg, "target.samples_per_class"),
        "run_dir": str(cfg.paths.output_dir),
    }


def finished(cfg: DictConfig, *, strategy: dict[str, Any], source: dict[str, Any] | None, target: dict[str, Any],
             params: dict[str, int], predictions: str | None, source_norm_stats: str | None,
             resumed_from: dict[str, Any] | None, threads: int, started: float, started_unix: float,
             trunk: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "status": "ok",
        **_run_fields(cfg, strategy),
        "trunk": trunk,
        "source": source,
        "target": target,
        "params": params,
        "predictions": predictions,
        # where a random trunk's BatchNorm statistics came from (frozen_random), else null
        "source_norm_stats": source_norm_stats,
        "resumed_from": resumed_from,
        "code": code_version(),
        "threads": threads,
        "started_unix": started_unix,
        "wall_s": time.perf_counter() - started,
        "process": process_state(),  # at the run's end: what a shared sweep process carries to the next job
    }


def write(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / FILE, results)


def write_failure(cfg: DictConfig, err: BaseException, message: str) -> None:
    """results.json of a run that failed: the run's identity, the error and its type."""
    try:
        write(Path(cfg.paths.output_dir), {"status": "failed", "error": message, "error_type": type(err).__name__,
                                           **_run_fields(cfg, {"name": freezing_name(cfg)})})
    except Exception:  # noqa: BLE001 - never let reporting hide the real error
        pass


def resume_command(cfg: DictConfig) -> str:
    """The command that continues this run: ``resume=<run folder>`` (which reuses its overrides); for a
    sweep job, the sweep's command with ``resume=last``, which continues every job that has not finished."""
    import shlex
    import sys

    from xfer.runtime import is_multirun

    if not is_multirun():
        return f"python train.py resume={shlex.quote(str(cfg.paths.output_dir))}"
    argv = sys.argv[1:] if Path(sys.argv[0]).name == "train.py" else None  # a launcher's worker has its own argv
    if argv is None:
        return "the sweep's python train.py -m ... command with resume=last"
    kept = [shlex.quote(a) for a in argv
            if a not in ("-m", "--multirun") and not a.startswith(("resume=", "ckpt_path="))]
    return " ".join(["python train.py -m", *kept, "resume=last"])


def write_interrupted(cfg: DictConfig, signal_name: str, progress: Any | None, write: bool = True) -> str:
    """results.json of a run a signal stopped (``status: interrupted``): the stage and epoch it reached
    (``progress``, a ``xfer.stage.Progress``; None outside a stage's training) and the command that
    resumes it. Returns the one-line message. A results.json that is already complete is kept."""
    command = resume_command(cfg)
    path = Path(cfg.paths.output_dir) / FILE
    where: dict[str, Any] = {"stage": None, "epoch": None, "epochs_done": None, "max_epochs": None,
                             "last_checkpoint": None}
    if progress is None:
        text = f"interrupted by {signal_name} outside a stage's training"
    else:
        last = progress.last_ckpt if progress.last_ckpt.is_file() else None
        where = {"stage": progress.stage, "epoch": min(progress.epochs_done + 1, progress.max_epochs),
                 "epochs_done": progress.epochs_done, "max_epochs": progress.max_epochs,
                 "last_checkpoint": None if last is None else str(last)}
        if progress.epochs_done >= progress.max_epochs:
            text = (f"interrupted by {signal_name} in the {progress.stage} stage, after its "
                    f"{progress.max_epochs} epochs")
        else:
            kept = f", the last kept in {last}" if last is not None and progress.stage == "target" else ""
            text = (f"interrupted by {signal_name} in the {progress.stage} stage, epoch {where['epoch']} of "
                    f"{progress.max_epochs} ({progress.epochs_done} finished{kept})")
    try:
        complete = json.loads(path.read_text()).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        complete = False
    if complete:
        return f"{text}; its results.json was already complete"
    again = " (the source stage starts again)" if progress is not None and progress.stage == "source" else ""
    message = f"{text}; results.json says status: interrupted; continue with: {command}{again}"
    if write:
        try:
            atomic_write_json(path, {"status": "interrupted", "signal": signal_name, "error": message,
                                     "error_type": "Interrupted", **where, "resume": command,
                                     **_run_fields(cfg, {"name": freezing_name(cfg)})})
        except Exception:  # noqa: BLE001 - never let reporting hide the interruption
            pass
    return message


def log_hparams(trainer: Any, cfg: DictConfig, results: dict[str, Any]) -> None:
    """The run's settings (and, in TensorBoard's HPARAMS tab, its test scores) in every logger."""
    from pytorch_lightning.loggers import TensorBoardLogger

    if not trainer.loggers or trainer.fast_dev_run:
        return
    hparams = {
        "strategy": results["strategy"]["name"], "seed": cfg.seed, "fraction": cfg.target.fraction,
        "source": cfg.source.name, "target": cfg.target.name,
        "trunk": cfg.trunk._target_.rsplit(".", 1)[-1] + (f":{cfg.trunk.arch}" if "arch" in cfg.trunk else ""),
        "lr": cfg.optim.lr, "trunk_lr": cfg.optim.trunk_lr, "weight_decay": cfg.optim.weight_decay,
        "max_epochs": cfg.trainer.max_epochs,
    }
    metrics = {f"hp/target_{k.split('/')[-1]}": v for k, v in results["target"]["test"].items()}
    if results["source"]:
        metrics.update({f"hp/source_{k.split('/')[-1]}": v for k, v in results["source"]["test"].items()})
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):  # TensorBoard's HPARAMS tab takes metrics with the settings
            logger.log_hyperparams(hparams, metrics=metrics)
        else:
            logger.log_hyperparams(hparams)
        logger.finalize("success")


def summary_lines(results: dict[str, Any]) -> list[str]:
    if results.get("already_done"):  # a resumed sweep's finished job (xfer.sweep_resume.earlier_attempt)
        best = results["target"].get("best_val")
        return [f"xfer {results['experiment']}: strategy={results['strategy']['name']} seed={results['seed']} "
                f"fraction={results['fraction']}: already done in {results['run_dir']} (best val "
                f"{'n/a' if best is None else f'{100 * best:.1f}%'}); not retrained"]

    def pct(stage: dict[str, Any], key: str) -> str:
        value = stage["test"].get(f"test/{key}")
        return "n/a" if value is None else f"{100 * value:.1f}%"

    lines = [f"xfer {results['experiment']}: strategy={results['strategy']['name']} seed={results['seed']} "
             f"fraction={results['fraction']}"]
    src = results["source"]
    if src:
        how = f"cached trunk {src['key']}" if src["cached"] else f"trained in {src['wall_s']:.0f} s, key {src['key']}"
        lines.append(f"  source  {src['dataset']:<14} test acc {pct(src, 'acc'):>6}   ({how})")
    elif results.get("source_norm_stats"):
        frozen = ", frozen" if results["params"].get("trunk_trainable") == 0 else ""
        lines.append(f"  source  (none: random trunk{frozen}; its BatchNorm statistics from {results['source_norm_stats']})")
    else:
        lines.append("  source  (none: trunk starts random)")
    tgt = results["target"]
    lines.append(f"  target  {tgt['dataset']:<14} test acc {pct(tgt, 'acc'):>6}   macro-F1 {pct(tgt, 'f1')}"
                 f"   ({tgt['wall_s']:.0f} s)")
    lines.append(f"  run     {results['run_dir']}")
    lines.append(f"  view    tensorboard --logdir {results['run_dir']}")
    return lines
