"""Per-example predictions of a trained model on its val and test splits, saved beside results.json
as ``predictions.npz``; the sweep summary pairs them across strategies (bootstrap over examples,
McNemar's test).

Arrays, for each split ``s`` in ("val", "test"): ``s_index`` (each example's row in the data set, as
the reader returned it), ``s_label``, ``s_pred`` (int64) and ``s_prob`` (float32 [n, classes])."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from xfer.io import atomic_write_bytes

FILE = "predictions.npz"
SPLITS = ("val", "test")


@torch.no_grad()
def predict(module: torch.nn.Module, dm, limits: dict[str, int | None] | None = None,
            device: torch.device | str = "cpu", splits: tuple[str, ...] = SPLITS) -> dict[str, np.ndarray]:
    """The arrays above, from ``module`` in eval mode on ``dm``'s val and test loaders. ``limits``
    keeps only the first n examples of a split (the batches a limited Lightning loop scored)."""
    was_training = module.training
    module.eval()
    original = next(module.parameters()).device
    module.to(device)
    out: dict[str, np.ndarray] = {}
    try:
        for split in splits:
            probs, labels = [], []
            for x, y in getattr(dm, f"{split}_dataloader")():
                probs.append(torch.softmax(module(x.to(device)).float(), dim=1).cpu())
                labels.append(y)
            prob = torch.cat(probs).numpy().astype(np.float32)
            label = torch.cat(labels).numpy().astype(np.int64)
            index = np.asarray(dm.indices[split], dtype=np.int64)
            n = (limits or {}).get(split)
            if n is not None:
                prob, label, index = prob[:n], label[:n], index[:n]
            out.update({f"{split}_index": index, f"{split}_label": label, f"{split}_pred": prob.argmax(1),
                        f"{split}_prob": prob})
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
