"""The source stage: train the trunk on the source task once per key, and keep it in the trunk cache."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from xfer import build
from xfer.cache import TrunkCache, cache_key
from xfer.runtime import global_rank
from xfer.stage import fit_and_test

log = logging.getLogger(__name__)

# data-module settings that do not change what the source stage learns
_NOT_SHAPING = ("num_workers", "eval_batch_size", "on_device", "on_device_limit_mb", "pin_memory", "read_cache_dir")
# reader settings that change how, not what, it reads (a lazy read serves the in-memory batches, bit for bit)
_NOT_SHAPING_READER = ("in_memory", "in_memory_limit_mb")
# Trainer settings that shape the source stage's weights; at their defaults (1 or 1.0) they are left out
_SHAPING_TRAINER = ("limit_train_batches", "limit_val_batches", "accumulate_grad_batches", "gradient_clip_algorithm")


@dataclass
class SourceOutcome:
    state: dict[str, torch.Tensor]  # the source model's whole state: adapter.*, trunk.*, head.*
    meta: dict[str, Any]
    cached: bool
    key: str

    def describe(self) -> dict[str, Any]:
        """The source stage's part of results.json."""
        return {"dataset": self.meta["dataset"], "cached": self.cached, "key": self.key, "test": self.meta["test"],
                "wall_s": 0.0 if self.cached else self.meta["wall_s"],
                "timing": None if self.cached else self.meta.get("timing"), "trained_in": self.meta.get("trained_in"),
                "sizes": self.meta.get("sizes"), "dropped": self.meta.get("dropped")}


def source_key(cfg: DictConfig, weights_sha256: str | None = None) -> str:
    """Everything that shapes the trained trunk, hashed: the cache key. ``weights_sha256``: the sha256 of the
    file the trunk's initial weights came from (``trunk.weights``), so a changed file never reuses a cached
    trunk; keys of trunks without one are as before."""
    source = {k: v for k, v in build.to_dict(cfg.source).items() if k not in _NOT_SHAPING}
    if isinstance(source.get("reader"), dict):
        source["reader"] = {k: v for k, v in source["reader"].items() if k not in _NOT_SHAPING_READER}
    if isinstance(source.get("augment"), dict) and not source["augment"].get("transforms"):
        del source["augment"]  # augment=none: keys as before the augment group existed
    extra = {} if weights_sha256 is None else {"trunk_weights_sha256": weights_sha256}
    return cache_key({
        **extra,
        "source": source,
        "adapter": build.to_dict(cfg.source_adapter),
        "trunk": build.to_dict(cfg.trunk),
        "head": build.to_dict(cfg.head),
        "stage": build.to_dict(cfg.source_stage),
        "seed": cfg.seed,
        "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "precision": str(cfg.trainer.get("precision")),
        # what else decides the weights the stage keeps: how much it trains and validates, and on what
        # the best checkpoint is chosen
        **{k: build.to_dict(cfg.trainer.get(k)) for k in _SHAPING_TRAINER if cfg.trainer.get(k) not in (None, 1, 1.0)},
        **({"checkpoint": build.to_dict(cfg.callbacks.checkpoint)}
           if (cfg.get("callbacks") or {}).get("checkpoint") is not None else {}),
    })


def run_source_stage(cfg: DictConfig, run_dir: Path, weights_sha256: str | None = None) -> SourceOutcome:
    key = source_key(cfg, weights_sha256)
    cache = TrunkCache(cfg.paths.cache_dir, lock_timeout_s=float(cfg.trunk_cache_wait_s))

    def train() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        log.info("source stage: training the trunk on %s (cache key %s)", cfg.source.name, key)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = build.datamodule(cfg.source, cfg.seed)
        trunk = build.trunk(cfg.trunk)
        module = build.model(dm.spec, trunk, cfg.source_adapter, cfg.head, build.to_dict(cfg.source_stage.optim))
        result, _ = fit_and_test(cfg, module, dm, run_dir, "source", [], max_epochs=cfg.source_stage.max_epochs)
        meta = {"key": key, "dataset": cfg.source.name, "test": result.test, "best_val": result.best_val,
                "wall_s": result.wall_s, "sizes": dm.sizes(), "dropped": dm.dropped, "trained_in": str(run_dir),
                "timing": result.extra["timing"]}
        return module.state_dict(), meta

    if cfg.trainer.get("fast_dev_run"):  # a smoke test's trunk is never worth caching
        state, meta = train()
        return SourceOutcome(state, meta, False, key)
    state, meta, hit = cache.get_or_build(key, train, rank=global_rank())
    if hit:
        log.info("source stage: reusing the cached trunk %s (trained in %s)", key, meta.get("trained_in"))
    return SourceOutcome(state, meta, hit, key)
