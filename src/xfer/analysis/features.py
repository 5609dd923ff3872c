"""Pooled features after every trunk block: what the diagnostics score and compare.

Depth k (1-based) is the output of the first k blocks, ``trunk.blocks[:k]``: the features that
``freeze_first_k`` with ``strategy.k=k`` keeps fixed. A block's output map is pooled to one vector per
example as the trunk pools its last one: the mean (or max, ``trunk.pool=max``) over space for a
[B, C, H, W] map, the mean over positions for a 1-D [B, C, L] map, and the class token for a ViT.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from xfer import build
from xfer.checkpoints import part_state
from xfer.data.module import SplitDataModule, as_batch
from xfer.errors import ConfigError

# trunks whose blocks are callables run one after another (a timm trunk's blocks are parameter groups)
_WALKABLE = ("CNNTrunk", "ResNetTrunk", "TextCNNTrunk", "TorchvisionTrunk")


def check_walkable(trunk: nn.Module) -> None:
    """One line for a trunk whose per-block features cannot be had."""
    names = {c.__name__ for c in type(trunk).__mro__}
    if not names & set(_WALKABLE):
        raise ConfigError(f"trunk {type(trunk).__name__}: per-block features need a trunk whose blocks run in "
                          f"turn; allowed: trunk=cnn, resnet, text_cnn or torchvision (a timm trunk's blocks are "
                          f"parameter groups: score it at its output with trunk=torchvision instead)")


def pool(trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One block's output map -> [B, features]."""
    if x.dim() == 2:
        return x
    if x.dim() == 4:
        return x.amax(dim=(2, 3)) if getattr(trunk, "pool", "avg") == "max" else x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x[:, 0] if getattr(trunk, "family", None) == "vit" else x.mean(dim=2)
    raise ValueError(f"a block's output of shape {tuple(x.shape)}: cannot pool it to one vector per example")


@torch.no_grad()
def block_features(adapter: nn.Module, trunk: nn.Module, batches: Iterable[torch.Tensor],
                   depths: Sequence[int] | None = None) -> list[np.ndarray]:
    """Pooled float32 features at each depth in ``depths`` (1..len(blocks); default: all) of ``adapter``
    -> ``trunk.blocks``, for every input batch, in eval mode (BatchNorm on its running statistics)."""
    check_walkable(trunk)
    n_blocks = len(trunk.blocks)
    depths = list(range(1, n_blocks + 1)) if depths is None else list(depths)
    last = max(depths)
    was = adapter.training, trunk.training
    adapter.eval(), trunk.eval()
    device = next((p.device for p in trunk.parameters()), torch.device("cpu"))
    out: dict[int, list[np.ndarray]] = {d: [] for d in depths}
    try:
        for x in batches:
            h = adapter(x.to(device))
            for k, block in enumerate(trunk.blocks[:last], start=1):
                h = block(h)
                if k in out:
                    out[k].append(pool(trunk, h).float().cpu().numpy())
    finally:
        adapter.train(was[0]), trunk.train(was[1])
    return [np.concatenate(out[d]) if out[d] else np.zeros((0, 0), np.float32) for d in depths]


def sample_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Which of ``n`` examples a diagnostic reads: all, or ``limit`` of them drawn with ``seed`` (sorted)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(limit), replace=False))


def split_batches(dm: SplitDataModule, split: str, indices: np.ndarray, batch_size: int):
    """(inputs, labels) of ``split``'s examples ``indices``, in that order, never augmented."""
    loader = DataLoader(dm.datasets[split], batch_size=batch_size, sampler=indices.tolist(), collate_fn=as_batch)
    yield from loader


def inputs_of(dm: SplitDataModule, split: str, indices: np.ndarray, batch_size: int,
              labels: list[torch.Tensor] | None = None):
    """The inputs of ``split_batches``; their labels appended to ``labels`` on the way, where given."""
    for x, y in split_batches(dm, split, indices, batch_size):
        if labels is not None:
            labels.append(y)
        yield x


def source_view(source: SplitDataModule, target: SplitDataModule):
    """How the source adapter reads the target's inputs: unchanged for two image data sets, through the two
    vocabularies for two text ones (each fits its own tokenizer); None across modalities, where it cannot."""
    if source.spec.modality != target.spec.modality:
        return None
    if source.spec.modality == "text":
        from xfer.data.text import id_translator

        return id_translator(source, target)
    return lambda x: x


def source_adapter_and_head(state: dict[str, torch.Tensor], source: SplitDataModule, trunk: nn.Module,
                            cfg: DictConfig) -> tuple[nn.Module, nn.Module]:
    """The source stage's adapter and head, out of its model's ``state`` (keys ``adapter.*``, ``head.*``)."""
    with torch.random.fork_rng(devices=[]):
        adapter, head = build.adapter_and_head(source.spec, trunk, cfg.source_adapter, cfg.head)
    for prefix, part in (("adapter.", adapter), ("head.", head)):
        part.load_state_dict(part_state(state, prefix), strict=True)
    return adapter, head
