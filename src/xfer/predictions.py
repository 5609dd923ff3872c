"""Per-example predictions of a trained model on its val and test splits, saved beside results.json
as ``predictions.npz``; the sweep summary pairs them across strategies (bootstrap over examples,
McNemar's test).

Arrays, for each split ``s`` in ("val", "test"): ``s_index`` (each example's row in the data set, as
the reader returned it), ``s_label``, ``s_pred`` (int64), ``s_prob`` (float32 [n, classes]) and, for a
grouped split, ``s_group`` (each example's group id: examples of one group are not independent)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from xfer.io import atomic_write_bytes

FILE = "predictions.npz"
SPLITS = ("val", "test")


def autocast_for(precision: str, device: str) -> contextlib.AbstractContextManager:
    """The autocast the trainer's test loop ran under, so predictions score the model it scored."""
    if "bf16" in precision and "true" not in precision:
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    if precision.startswith("16") and "true" not in precision:
        return torch.autocast(device_type=device, dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(module: torch.nn.Module, dm, limits: dict[str, int | None] | None = None,
            device: torch.device | str = "cpu", splits: tuple[str, ...] = SPLITS,
            precision: str = "32-true") -> dict[str, np.ndarray]:
    """The arrays above, from ``module`` in eval mode on ``dm``'s val and test loaders, under the
    ``precision`` the trainer used. ``limits`` keeps only the first n examples of a split (the batches a
    limited Lightning loop scored)."""
    was_training = module.training
    module.eval()
    original = next(module.parameters()).device
    module.to(device)
    out: dict[str, np.ndarray] = {}
    try:
        for split in splits:
            probs, labels = [], []
            for x, y in getattr(dm, f"{split}_dataloader")():
                with autocast_for(str(precision), torch.device(device).type):
                    logits = module(x.to(device))
                probs.append(torch.softmax(logits.float(), dim=1).cpu())
                labels.append(y)
            prob = torch.cat(probs).numpy().astype(np.float32)
            label = torch.cat(labels).numpy().astype(np.int64)
            index = np.asarray(dm.indices[split], dtype=np.int64)
            groups = getattr(dm, "groups", None)
            n = (limits or {}).get(split) or len(label)
            out.update({f"{split}_index": index[:n], f"{split}_label": label[:n], f"{split}_pred": prob[:n].argmax(1),
                        f"{split}_prob": prob[:n]})
            if groups is not None:
                out[f"{split}_group"] = np.asarray(groups[split][:n]).astype(str)
    finally:
        module.to(original)
        module.train(was_training)
    return out


def accuracy(arrays: dict[str, np.ndarray], split: str = "test") -> float:
    return float((arrays[f"{split}_pred"] == arrays[f"{split}_label"]).mean())


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
