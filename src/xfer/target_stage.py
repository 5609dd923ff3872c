"""The target stage's parts: what a freezing strategy's ``prepare`` gets (``TargetBuild``), and what the
stage keeps of its best checkpoint (per-example predictions, the validation accuracy winners compare)."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from xfer import build, predictions
from xfer.checkpoints import load_checkpoint, load_trunk, part_state
from xfer.data.module import SplitDataModule
from xfer.errors import ConfigError
from xfer.freezing import Freezing
from xfer.models.ecosystem import EcosystemTrunk
from xfer.models.module import TransferModule

log = logging.getLogger(__name__)


class TargetBuild:
    """The target stage's parts, built once, and the services a strategy's ``prepare`` may use
    (xfer.freezing.base.TargetBuild says what each one is).

    ``trunk`` is built right after seeding with ``cfg.seed``; the RNG state after it is kept, and the
    first part built here (by ``model`` or ``source_adapter_and_head``) draws from that state, so the
    target model's initialisation is the same whether the source stage trained, came from the cache or
    did not run, and whatever the strategy; later parts draw on from there."""

    def __init__(self, cfg: DictConfig, trunk: torch.nn.Module, rng_after_trunk: torch.Tensor,
                 target: SplitDataModule, pretrained: Mapping[str, torch.Tensor] | None):
        self.cfg, self.seed = cfg, int(cfg.seed)
        self.trunk, self.target, self.pretrained = trunk, target, pretrained
        self.optim: dict[str, Any] = build.to_dict(cfg.optim)
        self.source_eval_batch_size = int(cfg.source.eval_batch_size)
        self.norm_stats_source: str | None = None  # set when a strategy took BatchNorm statistics from the source
        self._rng: torch.Tensor | None = rng_after_trunk
        self._source: SplitDataModule | None = None

    def _draw_after_trunk(self) -> None:
        """Before the first part is built: the RNG as it was right after the trunk."""
        if self._rng is not None:
            torch.set_rng_state(self._rng)
            self._rng = None

    def model(self, freezing: Freezing, cls: type[TransferModule] | None = None, **extra: Any) -> TransferModule:
        self._draw_after_trunk()
        module = build.model(self.target.spec, self.trunk, self.cfg.target_adapter, self.cfg.head, self.optim, freezing,
                             cls=cls or TransferModule, **extra)
        module.class_names = list(self.target.spec.class_names)
        return module

    def source_data(self) -> SplitDataModule:
        if self._source is None:
            self._source = build.datamodule(self.cfg.source, self.seed)
        return self._source

    def source_adapter_and_head(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        self._draw_after_trunk()
        return build.adapter_and_head(self.source_data().spec, self.trunk, self.cfg.source_adapter, self.cfg.head)

    def reinit(self, trunk: torch.nn.Module, blocks: Iterable[int]) -> None:
        torch.manual_seed(self.seed + int(self.cfg.reinit_seed_offset))  # the same random blocks for every strategy
        for i in blocks:
            for m in trunk.blocks[i].modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()

    @torch.no_grad()
    def norm_stats_from_source(self, trunk: torch.nn.Module) -> None:
        """Recompute the trunk's BatchNorm running statistics from one pass over the source training data,
        fed through a fresh source adapter as in the source stage (its own norms on batch statistics).
        The exact average over the pass (momentum=None), not an EMA; the RNG state is left as it was."""
        norms = [m for m in trunk.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            source = self.source_data()
            adapter, _ = build.adapter_and_head(source.spec, trunk, self.cfg.source_adapter, self.cfg.head)
            momenta = [m.momentum for m in norms]
            was_training = trunk.training
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
            adapter.train(), trunk.train()
            try:
                for chunk in source.inputs("train", self.source_eval_batch_size):
                    trunk(adapter(chunk))
            finally:
                for m, momentum in zip(norms, momenta):
                    m.momentum = momentum
                trunk.train(was_training)
        self.norm_stats_source = str(self.cfg.source.name)
        log.info("BatchNorm statistics of the random trunk from one pass over %d %s training samples",
                 len(source.datasets["train"]), self.cfg.source.name)


def seeded_trunk(cfg: DictConfig) -> tuple[torch.nn.Module, torch.Tensor]:
    """The target stage's trunk, built right after seeding with ``cfg.seed``, and the RNG state after it.
    ``random_trunk`` (the scratch and frozen_random controls): a trunk whose config loads pretrained weights
    gets the weights of the same trunk built without them (its library's own random init, drawn after the same
    seeding: the very trunk, and RNG state, of a run with ``trunk.weights=null``); it keeps the preprocessing of
    the weights named, so the controls see the same inputs as the strategies they control."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    trunk = build.trunk(cfg.trunk)
    if cfg.get("random_trunk") and isinstance(trunk, EcosystemTrunk) and trunk.weights.kind != "random":
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        random = build.trunk(OmegaConf.merge(cfg.trunk, {"weights": None}))
        trunk.take_random_weights(random)
        log.info("random_trunk: %s starts from random weights, not trunk.weights=%s (whose preprocessing it keeps)",
                 trunk.arch, trunk.preprocessing_from)
    return trunk, torch.get_rng_state()


def build_target(cfg: DictConfig, freezing: Freezing, target: SplitDataModule,
                 pretrained: Mapping[str, torch.Tensor] | None = None,
                 seeded: tuple[torch.nn.Module, torch.Tensor] | None = None) -> tuple[TransferModule, Any, TargetBuild]:
    """``freezing.prepare`` on the target stage's parts: the model and data the stage trains, and the
    parts they came from. ``seeded``: the stage's trunk and the RNG state after it (``seeded_trunk``), when
    already built; ``pretrained``: the source stage's model, whose trunk weights are loaded into it."""
    trunk, rng = seeded if seeded is not None else seeded_trunk(cfg)
    if pretrained is not None:
        load_trunk(trunk, pretrained)
    parts = TargetBuild(cfg, trunk, rng, target, pretrained)
    module, data = freezing.prepare(parts)
    if cfg.get("target_adapter_from_source") and pretrained is not None:
        load_source_adapter(module.adapter, pretrained, cfg)
    return module, data, parts


def load_source_adapter(adapter: torch.nn.Module, pretrained: Mapping[str, torch.Tensor], cfg: DictConfig) -> None:
    """``target_adapter_from_source``: the target adapter starts from the source stage's trained adapter
    (the same kind of adapter on the same kind of input: an image model reading rendered text), or one line
    saying why it cannot. Runs without a source model (scratch, frozen_random) keep their fresh adapter."""
    state = part_state(pretrained, "adapter.")
    own = adapter.state_dict()
    bad = sorted(k for k in set(own) | set(state) if k not in own or k not in state or own[k].shape != state[k].shape)
    if bad:
        k = bad[0]
        shapes = (f"{tuple(state[k].shape) if k in state else 'missing'} in the source adapter, "
                  f"{tuple(own[k].shape) if k in own else 'missing'} in the target's")
        raise ConfigError(f"target_adapter_from_source=true: the source adapter "
                          f"({OmegaConf.select(cfg, 'source_adapter._target_')}) does not fit the target adapter "
                          f"({OmegaConf.select(cfg, 'target_adapter._target_')}): {k} is {shapes}; allowed: the same "
                          f"adapter on inputs of the same shape and channels, or target_adapter_from_source=false")
    adapter.load_state_dict(state, strict=True)


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
    ck = (cfg.get("callbacks") or {}).get("checkpoint") or {}
    monitor, mode = ck.get("monitor"), ck.get("mode")
    if score is not None and monitor == "val/acc" and mode == "max":
        return score, "checkpoint val/acc"
    if preds is not None and "val_pred" in preds:
        return predictions.accuracy(preds, "val"), f"val predictions of the best checkpoint ({monitor}, {mode})"
    return None, None
