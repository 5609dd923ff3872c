"""One run: the source stage (cached), then the target stage, then results.json and a summary."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from xfer import build, predictions
from xfer.cache import CacheError, TrunkCache, cache_key
from xfer.evaluate import find_resume, load_checkpoint, state_mismatch
from xfer.io import atomic_write_json
from xfer.models.module import TransferModule
from xfer.freezing import param_groups
from xfer.schema import validate
from xfer.freezing.joint import JointDataModule, JointTransferModule

log = logging.getLogger(__name__)

# data-module settings that do not change what the source stage learns
_NOT_SHAPING = ("num_workers", "eval_batch_size")


@dataclass
class SourceOutcome:
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    cached: bool
    key: str


@dataclass
class StageResult:
    test: dict[str, float]
    wall_s: float
    best_val: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def global_rank() -> int:
    """This process's rank in a multi-process (DDP) run launched by Lightning, torchrun or SLURM; 0 alone."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def source_key(cfg: DictConfig) -> str:
    source = {k: v for k, v in build.to_dict(cfg.source).items() if k not in _NOT_SHAPING}
    return cache_key({
        "source": source,
        "adapter": build.to_dict(cfg.source_adapter),
        "trunk": build.to_dict(cfg.trunk),
        "head": build.to_dict(cfg.head),
        "stage": build.to_dict(cfg.source_stage),
        "seed": cfg.seed,
        "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "precision": str(cfg.trainer.get("precision")),
    })


def fit_and_test(cfg: DictConfig, module: TransferModule, dm: pl.LightningDataModule, run_dir: Path,
                 stage: str, callbacks: list, ckpt_path: str | None = None, **trainer_overrides: Any
                 ) -> tuple[StageResult, pl.Trainer]:
    start = time.perf_counter()
    trainer = build.trainer(cfg, run_dir, stage, callbacks, **trainer_overrides)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    best = None if trainer.fast_dev_run else "best"
    tested = [{}]
    if stage != "target" or cfg.get("eval_test", True):  # a tuning trial never looks at the test split
        tested = trainer.test(module, datamodule=dm, ckpt_path=best, weights_only=True, verbose=False)
    ckpt = trainer.checkpoint_callback
    best_val = float(ckpt.best_model_score) if ckpt is not None and ckpt.best_model_score is not None else None
    return StageResult(dict(tested[0]), time.perf_counter() - start, best_val,
                       {"timing": build.stage_timing(trainer)}), trainer


def run_source_stage(cfg: DictConfig, run_dir: Path) -> SourceOutcome:
    key = source_key(cfg)
    cache = TrunkCache(cfg.paths.cache_dir)

    def train() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        log.info("source stage: training the trunk on %s (cache key %s)", cfg.source.name, key)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = build.datamodule(cfg.source, cfg.seed)
        trunk = instantiate(cfg.trunk)
        optim = build.to_dict(cfg.source_stage.optim)
        module = build.model(dm.spec, trunk, cfg.source_adapter, cfg.head, optim)
        result, _ = fit_and_test(cfg, module, dm, run_dir, "source", [],
                                 max_epochs=cfg.source_stage.max_epochs)
        meta = {"key": key, "dataset": cfg.source.name, "test": result.test, "best_val": result.best_val,
                "wall_s": result.wall_s, "sizes": dm.sizes(), "trained_in": str(run_dir),
                "timing": result.extra["timing"]}
        return module.state_dict(), meta

    if cfg.trainer.get("fast_dev_run"):  # a smoke test's trunk is never worth caching
        state, meta = train()
        return SourceOutcome(state, meta, False, key)
    state, meta, hit = cache.get_or_build(key, train, rank=global_rank())
    if hit:
        log.info("source stage: reusing the cached trunk %s (trained in %s)", key, meta.get("trained_in"))
    return SourceOutcome(state, meta, hit, key)


def load_trunk(trunk: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    prefix = "trunk."
    trunk_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    mismatch = state_mismatch({prefix + k: v for k, v in trunk.state_dict().items()},
                              {prefix + k: v for k, v in trunk_state.items()},
                              here="the configured trunk", there="the cached source model")
    if mismatch:
        raise CacheError(f"the cached source model does not fit the configured trunk: {mismatch}; delete its "
                         f"entry under cache/trunks/ (the key is in the log) to rebuild it")
    trunk.load_state_dict(trunk_state, strict=True)


def build_target(cfg: DictConfig, strat, target_dm, source: SourceOutcome | None, optim: dict[str, Any]
                 ) -> tuple[TransferModule, pl.LightningDataModule]:
    """The target model (and the data it trains on) for this strategy."""
    # The target model's initialisation must not depend on whether the source stage ran or came
    # from the cache, nor on the strategy: reseed, then build, then load the trunk.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    trunk = instantiate(cfg.trunk)
    dm: pl.LightningDataModule = target_dm
    if getattr(strat, "joint_source", False):
        source_dm = build.datamodule(cfg.source, cfg.seed)
        src_adapter, src_head = build.adapter_and_head(source_dm.spec, trunk, cfg.source_adapter, cfg.head)
        module = build.model(target_dm.spec, trunk, cfg.target_adapter, cfg.head, optim, strat,
                             cls=JointTransferModule, source_adapter=src_adapter, source_head=src_head,
                             lam=strat.lam)
        dm = JointDataModule(target_dm, source_dm)
    else:
        module = build.model(target_dm.spec, trunk, cfg.target_adapter, cfg.head, optim, strat)
    module.class_names = list(target_dm.spec.class_names)
    if source is not None:
        load_trunk(module.trunk, source.state)
    reinit = strat.reinit_blocks(len(module.trunk.blocks))
    if reinit:
        torch.manual_seed(cfg.seed + 7919)  # the same random upper blocks for every strategy
        for i in reinit:
            for m in module.trunk.blocks[i].modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    if strat.norm_stats_from_source:
        source_norm_stats(cfg, module.trunk)
    if getattr(strat, "wants_source_features", False):
        assert source is not None
        strat.attach_source_features(source_features(cfg, source, module.trunk))
    return module, dm


@torch.no_grad()
def source_images_and_adapter(cfg: DictConfig, trunk: torch.nn.Module) -> tuple[torch.Tensor, torch.nn.Module]:
    """The source training images and a fresh source adapter for ``trunk``, as the source stage builds them."""
    dm = build.datamodule(cfg.source, cfg.seed)
    adapter, _ = build.adapter_and_head(dm.spec, trunk, cfg.source_adapter, cfg.head)
    return dm.datasets["train"].tensors[0], adapter


def source_features(cfg: DictConfig, source: SourceOutcome, trunk: torch.nn.Module, limit: int = 2048
                    ) -> torch.Tensor:
    """The pretrained trunk's features of (up to ``limit``) source training images."""
    images, adapter = source_images_and_adapter(cfg, trunk)
    images = images[:limit]
    adapter.load_state_dict({k[len("adapter."):]: v for k, v in source.state.items() if k.startswith("adapter.")})
    was_training = trunk.training
    adapter.eval(), trunk.eval()
    feats = torch.cat([trunk(adapter(chunk)) for chunk in images.split(512)])
    trunk.train(was_training)
    return feats


@torch.no_grad()
def source_norm_stats(cfg: DictConfig, trunk: torch.nn.Module, batch_size: int = 512) -> None:
    """Recompute the trunk's BatchNorm running statistics from one pass over the source training data,
    fed through a fresh source adapter as in the source stage (its own norms on batch statistics).
    The exact average over the pass (momentum=None), not an EMA; the RNG state is left as it was."""
    norms = [m for m in trunk.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        images, adapter = source_images_and_adapter(cfg, trunk)
        momenta = [m.momentum for m in norms]
        was_training = trunk.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        adapter.train(), trunk.train()
        try:
            for chunk in images.split(batch_size):
                trunk(adapter(chunk))
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            trunk.train(was_training)
    log.info("BatchNorm statistics of the random trunk from one pass over %d %s training samples",
             len(images), cfg.source.name)


def best_predictions(cfg: DictConfig, module: TransferModule, dm, trainer: pl.Trainer) -> dict[str, Any] | None:
    """Val and test predictions of the best checkpoint (the one trainer.test scored), limited to the
    batches Lightning's loops scored when ``limit_*_batches`` is set. None where the scored examples
    cannot be known here: several processes with limited loops (each rank scored its own shard)."""
    limited = any(cfg.trainer.get(f"limit_{s}_batches") not in (None, 1.0) for s in ("val", "test"))
    if trainer.world_size > 1 and limited:
        log.warning("no predictions.npz: with %d processes and limit_*_batches set, the examples Lightning "
                    "scored are spread over ranks", trainer.world_size)
        return None
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    if best and Path(best).is_file():
        module.load_state_dict(load_checkpoint(best)["state_dict"])
    splits = ("val", "test") if cfg.get("eval_test", True) else ("val",)
    limits: dict[str, int | None] = {}
    for split, counts in (("val", trainer.num_val_batches), ("test", trainer.num_test_batches))[:len(splits)]:
        batches = sum(counts) if counts else None
        n = None if batches is None or batches == float("inf") else int(batches) * int(dm.eval_batch_size)
        limits[split] = n if n is not None and n < len(dm.datasets[split]) else None
    on_gpu = torch.cuda.is_available() and str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda", "auto")
    return predictions.predict(module, dm, limits, "cuda" if on_gpu else "cpu", splits,
                               str(cfg.trainer.get("precision", "32-true")))


def best_val_accuracy(cfg: DictConfig, score: float | None, preds: dict[str, Any] | None
                      ) -> tuple[float | None, str | None]:
    """The validation accuracy of the best checkpoint, which is what winners and tuning compare: the
    checkpoint's own score when it monitors val/acc, else the accuracy of its saved val predictions
    (another monitor, e.g. val/loss; or ddp_spawn, whose workers keep the score)."""
    ck = cfg.callbacks.checkpoint
    if score is not None and ck.monitor == "val/acc" and ck.mode == "max":
        return score, "checkpoint val/acc"
    if preds is not None and "val_pred" in preds:
        return predictions.accuracy(preds, "val"), f"val predictions of the best checkpoint ({ck.monitor}, {ck.mode})"
    return None, None


def count_params(module: torch.nn.Module, strat, optim: dict[str, Any], epochs: int) -> dict[str, int]:
    """Total parameters, and those the strategy trains in at least one epoch. Computed from the plan,
    so it is right in every process layout (ddp_spawn trains in worker processes)."""
    trained: dict[int, int] = {}
    for epoch in range(max(1, epochs) if strat.transitions() else 1):
        for group in param_groups(module, strat, optim, epoch):
            trained.update({id(p): p.numel() for p in group["params"]})
    return {"trainable": sum(trained.values()), "total": sum(p.numel() for p in module.parameters())}


def code_version() -> dict[str, Any] | None:
    """The git commit of the code that ran, and whether the checkout had changes: with the command
    (the run's .hydra/overrides.yaml) it names what reproduces a number. None outside a checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def job_threads(cfg: DictConfig) -> int | None:
    """``threads`` if set; under the joblib launcher, the cores shared out so that jobs x threads <= cores;
    under a submitit launcher (local processes, SLURM), the job's ``cpus_per_task``."""
    if cfg.get("threads"):
        return int(cfg.threads)
    from hydra.core.hydra_config import HydraConfig

    try:
        launcher = HydraConfig.get().launcher
    except ValueError:  # not under Hydra (tests, notebooks)
        return None
    target = str(launcher.get("_target_", ""))
    if "submitit" in target:
        return int(launcher.get("cpus_per_task") or 0) or None
    if "joblib" not in target:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_jobs = int(launcher.get("n_jobs") or -1)
    n_jobs = cores if n_jobs < 1 else min(n_jobs, cores)
    return max(1, cores // n_jobs)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run both stages for one config; write results.json into the run folder and return it."""
    validate(cfg)  # one-line ConfigError for a bad key or value, before anything loads or trains
    started, started_unix = time.perf_counter(), time.time()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = job_threads(cfg)
    if threads:
        torch.set_num_threads(threads)

    strat = build.strategy(cfg.strategy)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    target_dm = build.datamodule(cfg.target, cfg.seed)
    trunk = instantiate(cfg.trunk)
    strat.validate(len(trunk.blocks))
    # resume= / ckpt_path=: the earlier run's checkpoint, checked and copied into this run's folder
    resume = find_resume(cfg, run_dir)

    source = run_source_stage(cfg, run_dir) if strat.needs_source else None

    optim = build.to_dict(cfg.optim)
    module, dm = build_target(cfg, strat, target_dm, source, optim)
    if resume is not None:
        resume.check_fits(module)
    target, trainer = fit_and_test(cfg, module, dm, run_dir, "target", build.strategy_callbacks(strat, optim),
                                   ckpt_path=None if resume is None else str(resume.ckpt_path))
    # per-example predictions for the summary's paired statistics (rank 0 alone writes files)
    preds = None if trainer.fast_dev_run or global_rank() != 0 else best_predictions(cfg, module, target_dm, trainer)
    best_val, best_val_from = best_val_accuracy(cfg, target.best_val, preds)

    results = {
        "status": "ok",
        "experiment": cfg.name,
        "strategy": strat.describe(),
        "seed": cfg.seed,
        "split_seed": cfg.target.get("split_seed"),
        "eval_test": bool(cfg.get("eval_test", True)),
        "group_column": cfg.target.get("group_column"),
        "fraction": cfg.target.fraction,
        "samples_per_class": cfg.target.get("samples_per_class"),
        "source": None if source is None else {
            "dataset": cfg.source.name, "cached": source.cached, "key": source.key,
            "test": source.meta["test"], "wall_s": 0.0 if source.cached else source.meta["wall_s"],
            "timing": None if source.cached else source.meta.get("timing"),
            "trained_in": source.meta.get("trained_in"),
        },
        "target": {
            "dataset": cfg.target.name, "test": target.test, "best_val": best_val, "best_val_from": best_val_from,
            "wall_s": target.wall_s, "timing": target.extra["timing"], "sizes": target_dm.sizes(),
            "dropped": target_dm.dropped, "groups": target_dm.group_counts,
            "test_ids": target_dm.fingerprint("test"),
            "predictions_acc": None if preds is None or "test_pred" not in preds else predictions.accuracy(preds, "test"),
            "class_names": list(target_dm.spec.class_names), "confusion_matrix": module.test_confusion,
        },
        "params": count_params(module, strat, optim, int(cfg.trainer.max_epochs)),
        "predictions": None if preds is None else predictions.FILE,
        # where a random trunk's BatchNorm statistics came from (frozen_random), else null
        "source_norm_stats": cfg.source.name if strat.norm_stats_from_source else None,
        "resumed_from": None if resume is None else resume.describe(),
        "run_dir": str(run_dir),
        "code": code_version(),
        "threads": torch.get_num_threads(),
        "started_unix": started_unix,
        "wall_s": time.perf_counter() - started,
    }
    if global_rank() == 0:  # under multi-process DDP every rank runs this function
        if preds is not None:  # before results.json: a run with results.json is complete
            predictions.save(run_dir / predictions.FILE, preds)
        atomic_write_json(run_dir / "results.json", results)
        _log_hparams(trainer, cfg, results)
    return results


def _log_hparams(trainer: pl.Trainer, cfg: DictConfig, results: dict[str, Any]) -> None:
    logger = trainer.logger
    if logger is None or trainer.fast_dev_run:
        return
    hparams = {
        "strategy": results["strategy"]["name"], "seed": cfg.seed, "fraction": cfg.target.fraction,
        "source": cfg.source.name, "target": cfg.target.name, "trunk": cfg.trunk._target_.rsplit(".", 1)[-1],
        "lr": cfg.optim.lr, "trunk_lr": cfg.optim.trunk_lr, "weight_decay": cfg.optim.weight_decay,
        "max_epochs": cfg.trainer.max_epochs,
    }
    metrics = {f"hp/target_{k.split('/')[-1]}": v for k, v in results["target"]["test"].items()}
    if results["source"]:
        metrics.update({f"hp/source_{k.split('/')[-1]}": v for k, v in results["source"]["test"].items()})
    logger.log_hyperparams(hparams, metrics=metrics)
    logger.finalize("success")


def summary_lines(results: dict[str, Any]) -> list[str]:
    def pct(stage: dict[str, Any], key: str) -> str:
        value = stage["test"].get(f"test/{key}")
        return "n/a" if value is None else f"{100 * value:.1f}%"

    lines = [f"xfer {results['experiment']}: strategy={results['strategy']['name']} seed={results['seed']} "
             f"fraction={results['fraction']}"]
    src = results["source"]
    if src:
        how = f"cached trunk {src['key']}" if src["cached"] else f"trained in {src['wall_s']:.0f} s, key {src['key']}"
        lines.append(f"  source  {src['dataset']:<14} test acc {pct(src, 'acc'):>6}   ({how})")
    elif results["strategy"].get("name") == "frozen_random":
        lines.append(f"  source  (none: random trunk, frozen; its BatchNorm statistics from {results['source_norm_stats']})")
    else:
        lines.append("  source  (none: trunk starts random)")
    tgt = results["target"]
    lines.append(f"  target  {tgt['dataset']:<14} test acc {pct(tgt, 'acc'):>6}   macro-F1 {pct(tgt, 'f1')}"
                 f"   ({tgt['wall_s']:.0f} s)")
    lines.append(f"  run     {results['run_dir']}")
    lines.append(f"  view    tensorboard --logdir {results['run_dir']}")
    return lines
