"""Checkpoint files: loading them safely, and saying in one line how one does not fit a model.

* ``load_checkpoint`` reads a Lightning checkpoint with ``torch.load(weights_only=True)``: tensors and
  plain data only. A file that asks to run code on load (a crafted pickle) is refused with one line
  (``CheckpointError``) before anything in it runs; so is a damaged file.
* ``state_mismatch`` names the first difference between a checkpoint's weights and the model the
  config builds (block count, a missing key, a shape), for a one-line error instead of PyTorch's
  wall of missing/unexpected keys; ``trunk_check`` and ``load_trunk`` apply it to the trunk.
* ``AtomicCheckpointIO`` writes them the way xfer.io writes everything else: a temp file in the same
  folder, renamed into place.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.plugins.io.wrapper import _WrappingCheckpointIO

from xfer.errors import CacheError, CheckpointError
from xfer.io import atomic_write_with


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
                              f"format: {first_line(err)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    return ckpt


def first_line(err: BaseException) -> str:
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


def trunk_check(cfg: DictConfig, state: Mapping[str, Any], ckpt: Path, trunk: torch.nn.Module | None = None) -> None:
    """The configured trunk (``trunk``, else built from ``cfg``) against a checkpoint's, before anything trains."""
    if trunk is None:
        from hydra.utils import instantiate

        trunk = instantiate(cfg.trunk)
    expected = {f"trunk.{k}": v for k, v in trunk.state_dict().items()}
    mismatch = state_mismatch(expected, {k: v for k, v in state.items() if k.startswith("trunk.")},
                              here="the configured trunk")
    if mismatch:
        raise CheckpointError(f"checkpoint {ckpt} does not fit the configured trunk: {mismatch}")


def part_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a whole model's ``state`` under ``prefix`` (``trunk.``, ``adapter.``, ``head.``), without it."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_trunk(trunk: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load the trunk's weights out of a source model's state (keys ``trunk.*``), or say in one line how
    they do not fit."""
    prefix = "trunk."
    trunk_state = part_state(state, prefix)
    mismatch = state_mismatch({prefix + k: v for k, v in trunk.state_dict().items()},
                              {prefix + k: v for k, v in trunk_state.items()},
                              here="the configured trunk", there="the cached source model")
    if mismatch:
        raise CacheError(f"the cached source model does not fit the configured trunk: {mismatch}; delete its "
                         f"entry under cache/trunks/ (the key is in the log) to rebuild it")
    trunk.load_state_dict(trunk_state, strict=True)


def run_dir_of(ckpt: Path) -> Path | None:
    """``<run>/checkpoints/<stage>/x.ckpt`` -> ``<run>`` when that folder holds a Hydra config."""
    run = ckpt.resolve().parents[2] if len(ckpt.resolve().parents) > 2 else None
    return run if run is not None and (run / ".hydra" / "config.yaml").is_file() else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writes, made atomic in the checkpoint's own folder. Lightning writes a local
    checkpoint to the system temp folder and then moves it, which across file systems copies it in place:
    a full disk (or a kill) mid-copy leaves a truncated ``last.ckpt`` where the previous one was. Here
    the previous file stays until the new one is whole, and a full disk is one line naming the file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own way
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_atomic(checkpoint, path)


def write_checkpoints_atomically(strategy: Any) -> None:
    """Make ``AtomicCheckpointIO`` the strategy's checkpoint writer where Lightning would use its default
    ``TorchCheckpointIO``: none configured, or a wrapping plugin (``AsyncCheckpointIO``) named without a
    writer of its own, which Lightning would fill with the default. A writer the config names stays, and
    so does a strategy's own (XLA's)."""
    configured = getattr(strategy, "_checkpoint_io", None)  # read before the property fills in the default
    if isinstance(configured, _WrappingCheckpointIO):
        inner = configured
        while isinstance(inner.checkpoint_io, _WrappingCheckpointIO):
            inner = inner.checkpoint_io
        if inner.checkpoint_io is None:
            inner.checkpoint_io = AtomicCheckpointIO()
    elif configured is None or type(configured) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` streamed into a temp file beside ``path`` and renamed over it (xfer.io): no copy of
    the checkpoint in memory (a resnet18 with its AdamW state is 134 MiB), and no torn file under ``path``."""
    atomic_write_with(path, lambda fh: torch.save(obj, fh), lambda: tensor_bytes(obj))


def tensor_bytes(obj: Any) -> int | None:
    """The bytes of the tensors in ``obj`` (nested dicts, lists, tuples), each storage once: nearly all of a
    checkpoint file, for the full-disk message (so only asked for once the disk is full); None where
    something in it cannot be sized (a sparse tensor, a config that does not resolve)."""
    storages: dict[int, int] = {}
    visited: set[int] = set()
    stack = [obj]
    try:
        while stack:
            item = stack.pop()
            if id(item) in visited:  # a structure that holds itself
                continue
            visited.add(id(item))
            if isinstance(item, torch.Tensor):
                storage = item.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            elif isinstance(item, Mapping):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
    except Exception:  # noqa: BLE001 - only the message's size is lost
        return None
    return sum(storages.values())
