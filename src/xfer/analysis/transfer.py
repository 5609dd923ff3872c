"""Transferability at each cut depth, before any fine-tuning: ``python analyze.py transfer experiment=...``.

For the trunk the target stage would start from (source-trained, or pretrained when the source stage is
off) and, as the control, the random trunk the ``scratch`` run starts from, the target training features
after each block are scored (LogME, regularised H-score) and probed (k-NN and a linear probe, on val); LEEP
and NCE come from the source head where it applies (source and target share a modality and the source
adapter reads the target's inputs; text is read through the source's vocabulary, as each data set fits its own).

What feeds the trunk: the source adapter where it applies; otherwise (a cross-modal pair, and always for the
random control, which has no trained adapter) the target adapter after ``warmup_steps`` adapter-only steps
with the trunk frozen. The output says which. Features are standardised with the training sample's mean and
std before LogME and the H-score (LogME is not invariant to a per-feature scale; k-NN and the probe are).
The scores are priors to check against sweeps, not verdicts.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from xfer import build
from xfer.analysis import scores
from xfer.analysis.features import (block_features, check_walkable, inputs_of, sample_indices,
                                    source_adapter_and_head, source_view, split_batches)
from xfer.checkpoints import load_trunk
from xfer.data.module import SplitDataModule
from xfer.target_stage import seeded_trunk

log = logging.getLogger(__name__)

SCORES = ("logme", "h_score", "knn_acc", "probe_acc")  # per depth
TOP_SCORES = ("leep", "nce")                         # at the top, through the source head


@dataclass(frozen=True)
class TransferSettings:
    max_train: int = 1000          # target training examples scored (a seeded sample when there are more)
    max_val: int = 1000            # target val examples the k-NN and the probe are scored on
    warmup_steps: int = 30         # adapter-only steps before scoring, where no trained adapter applies
    knn_k: int = 20
    probe_weight_decay: float = 1e-3
    batch_size: int = 256


def settings_of(cfg: DictConfig) -> TransferSettings:
    node = OmegaConf.select(cfg, "analysis.transfer") or {}
    keys = TransferSettings.__dataclass_fields__
    return TransferSettings(**{k: node[k] for k in keys if k in node})


class _Viewed(nn.Module):
    """The source adapter reading target inputs as the source encodes them (text: through its vocabulary)."""

    def __init__(self, adapter: nn.Module, view) -> None:
        super().__init__()
        self.adapter, self.view = adapter, view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.view(x))


def _reads(adapter: nn.Module, trunk: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``adapter`` -> ``trunk`` runs on a target batch (a source adapter made for other inputs fails)."""
    try:
        with torch.no_grad():
            adapter.eval(), trunk.eval()
            trunk(adapter(x[:2]))
        return True
    except (RuntimeError, ValueError, IndexError):
        return False


def warm_up(trunk: nn.Module, target: SplitDataModule, cfg: DictConfig, steps: int, seed: int) -> nn.Module:
    """The target adapter as the target stage builds it, trained ``steps`` steps with a linear head on the
    frozen trunk (eval mode: its BatchNorm statistics stay), at ``optim.lr``; the trunk is left as it was."""
    torch.manual_seed(seed)
    adapter, _ = build.adapter_and_head(target.spec, trunk, cfg.target_adapter, cfg.head)
    head = nn.Linear(trunk.out_features, target.spec.num_classes)
    params = [p for p in (*adapter.parameters(), *head.parameters()) if p.requires_grad]
    if steps <= 0 or not params:
        return adapter
    flags = [p.requires_grad for p in trunk.parameters()]
    for p in trunk.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay))
    n = len(target.datasets["train"])
    rng = np.random.default_rng(seed)
    trunk.eval(), adapter.train(), head.train()
    try:
        done = 0
        while done < steps:
            for x, y in split_batches(target, "train", rng.permutation(n), int(target.batch_size)):
                loss = F.cross_entropy(head(trunk(adapter(x))), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done >= steps:
                    break
    finally:
        for p, flag in zip(trunk.parameters(), flags):
            p.requires_grad_(flag)
    return adapter


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def score_depth(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                s: TransferSettings) -> dict[str, float]:
    tx, vx = _standardise(train_x.astype(np.float64), val_x.astype(np.float64))
    return {"logme": scores.logme(tx, train_y), "h_score": scores.h_score(tx, train_y),
            "knn_acc": scores.knn_accuracy(tx, train_y, vx, val_y, k=s.knn_k),
            "probe_acc": scores.linear_probe_accuracy(tx, train_y, vx, val_y, weight_decay=s.probe_weight_decay)}


def score_trunk(name: str, trunk: nn.Module, adapter: nn.Module, feeding: str, target: SplitDataModule,
                train_idx: np.ndarray, val_idx: np.ndarray, s: TransferSettings,
                source_head: nn.Module | None = None) -> dict[str, Any]:
    train_y: list[torch.Tensor] = []
    val_y: list[torch.Tensor] = []  # the labels come with the features: each example is read once per pass
    train_f = block_features(adapter, trunk, inputs_of(target, "train", train_idx, s.batch_size, train_y))
    val_f = block_features(adapter, trunk, inputs_of(target, "val", val_idx, s.batch_size, val_y))
    train_y, val_y = torch.cat(train_y).numpy(), torch.cat(val_y).numpy()
    depths = [{"depth": k, "block": type(trunk.blocks[k - 1]).__name__, "dim": int(tf.shape[1]),
               **score_depth(tf, train_y, vf, val_y, s)}
              for k, (tf, vf) in enumerate(zip(train_f, val_f), start=1)]
    top = None
    if source_head is not None:
        with torch.no_grad():
            source_head.eval(), adapter.eval(), trunk.eval()
            probs = torch.cat([torch.softmax(source_head(trunk(adapter(x))), dim=1)
                               for x in inputs_of(target, "train", train_idx, s.batch_size)]).double().numpy()
        top = {"leep": scores.leep(probs, train_y), "nce": scores.nce(probs, train_y)}
    return {"name": name, "feeding": feeding, "depths": depths, "top": top}


def transfer_scores(cfg: DictConfig, source_state: dict[str, torch.Tensor] | None,
                    source: SplitDataModule | None = None, target: SplitDataModule | None = None) -> dict[str, Any]:
    """The transferability report of ``cfg``'s trunk (``source_state``: the source stage's model; None: the
    trunk as built, pretrained or not) beside the random control's; see the module docstring."""
    started = time.perf_counter()
    s = settings_of(cfg)
    seed = int(cfg.seed)
    target = target if target is not None else build.datamodule(cfg.target, seed)
    train_idx = sample_indices(len(target.datasets["train"]), s.max_train, seed)
    val_idx = sample_indices(len(target.datasets["val"]), s.max_val, seed)
    probe_x = next(inputs_of(target, "train", train_idx[:2], 2))

    with torch.random.fork_rng(devices=[]):
        trunk, _ = seeded_trunk(OmegaConf.merge(cfg, {"random_trunk": False}))
        check_walkable(trunk)
        if source_state is not None:
            load_trunk(trunk, source_state)
        name = "source-trained" if source_state is not None else (
            "pretrained" if getattr(getattr(trunk, "weights", None), "kind", "random") != "random" else "as built")
        adapter, head, feeding = None, None, ""
        if source_state is not None and build.modality(cfg.source) == target.spec.modality:
            source = source if source is not None else build.datamodule(cfg.source, seed)
            view = source_view(source, target)
            a, h = source_adapter_and_head(source_state, source, trunk, cfg)
            if view is not None and _reads(a, trunk, view(probe_x)):
                adapter, head = _Viewed(a, view), h
                feeding = f"source adapter (trained on {source.name})" + (
                    ", target words through the source vocabulary" if target.spec.modality == "text" else "")
        if adapter is None:
            adapter = warm_up(trunk, target, cfg, s.warmup_steps, seed)
            feeding = f"target adapter after {s.warmup_steps} adapter-only warm-up steps (trunk frozen)"
        trained = score_trunk(name, trunk, adapter, feeding, target, train_idx, val_idx, s, head)

        random_trunk, _ = seeded_trunk(OmegaConf.merge(cfg, {"random_trunk": True}))
        adapter = warm_up(random_trunk, target, cfg, s.warmup_steps, seed)
        control = score_trunk("random", random_trunk, adapter,
                              f"target adapter after {s.warmup_steps} adapter-only warm-up steps (trunk frozen)",
                              target, train_idx, val_idx, s)
    return {
        "experiment": str(cfg.name), "seed": seed, "target": str(cfg.target.name),
        "source": None if source_state is None else str(cfg.source.name),
        "trunk": str(OmegaConf.select(cfg, "trunk._target_")).rsplit(".", 1)[-1],
        "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "classes": int(target.spec.num_classes),
        "settings": asdict(s), "variants": [trained, control], "wall_s": time.perf_counter() - started,
    }
