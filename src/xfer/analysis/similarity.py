"""Representation similarity per trunk block (linear CKA, Kornblith et al. 2019), at the end of a run.

The inputs are fixed: the first ``analysis.similarity.examples`` target val examples. The val split depends on
``split_seed`` alone, so every seed, strategy and data size of a sweep reads the same inputs, and their
features can be compared. At the end of the target stage, with the best checkpoint's weights:

- **initial vs final** (what moved): the trunk the target stage started from (pretrained, source-trained or
  re-initialised, as the strategy set it up) against the fine-tuned trunk, both fed by the fine-tuned target
  adapter (so only the trunk differs); CKA of every block i of one against every block j of the other.
- **source vs final**: the source model (the source stage's adapter -> its trunk) against the fine-tuned target
  model (target adapter -> trunk), on the same target inputs, where the source adapter can read them: the same
  modality (text through the two vocabularies). Across modalities there is no input both adapters read: n/a.
- The final features per block are kept (``similarity/features.npz``) for the sweep summary's cross-seed CKA.

Written to ``<run>/similarity/`` (cka.csv, cka.png, features.npz), to TensorBoard (``cka/*`` scalars and the
heatmap) and to results.json (``target.similarity``).
"""
from __future__ import annotations

import copy
import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from xfer import build
from xfer.analysis.features import block_features, check_walkable, source_adapter_and_head, source_view, split_batches
from xfer.analysis.scores import linear_cka
from xfer.checkpoints import load_trunk
from xfer.data.module import SplitDataModule
from xfer.errors import ConfigError
from xfer.io import atomic_write_bytes

log = logging.getLogger(__name__)

FOLDER = "similarity"
FEATURES = f"{FOLDER}/features.npz"


def examples_of(cfg: DictConfig) -> int:
    return int(OmegaConf.select(cfg, "analysis.similarity.examples", default=500) or 0)


def snapshot(cfg: DictConfig, trunk: nn.Module) -> nn.Module | None:
    """The trunk as the target stage starts (taken before fit, and before a resume loads a checkpoint);
    None where the similarity is off or the trunk's blocks cannot be walked."""
    if examples_of(cfg) <= 0:
        return None
    try:
        check_walkable(trunk)
    except ConfigError as err:
        log.info("no representation similarity: %s", err)
        return None
    return copy.deepcopy(trunk).cpu()


def cka_matrix(a: list[np.ndarray], b: list[np.ndarray]) -> list[list[float]]:
    """CKA of block i of ``a`` against block j of ``b``: [len(a)][len(b)]."""
    return [[linear_cka(x, y) for y in b] for x in a]


def fixed_inputs(target: SplitDataModule, n: int, batch_size: int = 256) -> list[torch.Tensor]:
    """The first ``n`` val inputs, in order (never augmented)."""
    idx = np.arange(min(n, len(target.datasets["val"])))
    return [x for x, _ in split_batches(target, "val", idx, batch_size)]


def _source_model(cfg: DictConfig, state: dict[str, torch.Tensor], template: nn.Module, target: SplitDataModule,
                  source: Callable[[], SplitDataModule]) -> tuple[nn.Module, nn.Module, Callable] | str:
    """(source adapter, source-trained trunk, how the source adapter reads target inputs), or why not."""
    src_modality, tgt_modality = build.modality(cfg.source), target.spec.modality
    if src_modality != tgt_modality:
        return f"n/a: source {cfg.source.name} is {src_modality}, target {cfg.target.name} is {tgt_modality}; " \
               f"no input both adapters read"
    source_dm = source()
    view = source_view(source_dm, target)
    trunk = copy.deepcopy(template)
    load_trunk(trunk, state)
    adapter, _ = source_adapter_and_head(state, source_dm, trunk, cfg)
    return adapter, trunk, view


def measure(cfg: DictConfig, run_dir: Path, module: nn.Module, target: SplitDataModule, initial: nn.Module,
            source_state: dict[str, torch.Tensor] | None, source: Callable[[], SplitDataModule],
            loggers: list[Any] = (), step: int = 0) -> dict[str, Any]:
    """CKA per block for one finished run (``module`` holds the weights the run was tested with); writes the
    files, logs to ``loggers`` and returns what results.json keeps."""
    n = examples_of(cfg)
    trunk, adapter = module.trunk, module.adapter
    device = next((p.device for p in trunk.parameters()), torch.device("cpu"))
    inputs = fixed_inputs(target, n)
    names = [f"{i}:{type(b).__name__}" for i, b in enumerate(trunk.blocks)]  # as drift/block<i> names them
    final = block_features(adapter, trunk, inputs)
    start = block_features(adapter, initial.to(device), inputs)
    initial.cpu()
    out: dict[str, Any] = {
        "examples": int(sum(len(x) for x in inputs)), "inputs": "the first target val examples",
        "val_ids": target.fingerprint("val"),
        "blocks": names, "initial_vs_final": None, "source_vs_final": None, "source_note": None,
        "matrices": {"initial_vs_final": cka_matrix(start, final)}}
    out["initial_vs_final"] = [out["matrices"]["initial_vs_final"][i][i] for i in range(len(names))]
    if source_state is None:
        out["source_note"] = "n/a: no source stage ran"
    else:
        model = _source_model(cfg, source_state, initial, target, source)
        if isinstance(model, str):
            out["source_note"] = model
        else:
            src_adapter, src_trunk, view = model
            src_adapter.to(device), src_trunk.to(device)
            try:
                src = block_features(src_adapter, src_trunk, [view(x) for x in inputs])
            except (RuntimeError, ValueError, IndexError) as err:  # a source adapter made for other inputs
                out["source_note"] = f"n/a: the source adapter does not read the target's inputs ({err})"
            else:
                out["matrices"]["source_vs_final"] = cka_matrix(src, final)
                out["source_vs_final"] = [out["matrices"]["source_vs_final"][i][i] for i in range(len(names))]
    folder = run_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"block{i}": f.astype(np.float32) for i, f in enumerate(final)},
                        examples=np.int64(out["examples"]))
    atomic_write_bytes(folder / "features.npz", buf.getvalue())
    atomic_write_bytes(folder / "cka.csv", to_csv(out).encode())
    fig = figure(out, f"{cfg.name}: linear CKA per trunk block, {out['examples']} target val inputs")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    atomic_write_bytes(folder / "cka.png", png.getvalue())
    _log(out, fig, loggers, step)
    import matplotlib.pyplot as plt

    plt.close(fig)
    out["files"] = [f"{FOLDER}/cka.csv", f"{FOLDER}/cka.png", FEATURES]
    return out


def to_csv(out: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["comparison", "block_a", "block_b", "cka"])
    for name, matrix in out["matrices"].items():
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                writer.writerow([name, out["blocks"][i], out["blocks"][j], f"{value:.6f}"])
    return buf.getvalue()


_TITLES = {"initial_vs_final": ("trunk at the start", "fine-tuned trunk"),
           "source_vs_final": ("source model", "fine-tuned target model")}


def figure(out: dict[str, Any], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(out["matrices"].items())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    ticks = [b.split(":")[0] for b in out["blocks"]]
    for ax, (name, matrix) in zip(axes[0], panels):
        image = ax.imshow(np.asarray(matrix), vmin=0.0, vmax=1.0, cmap="viridis", origin="lower")
        rows, cols = _TITLES[name]
        ax.set_ylabel(f"{rows}: block")
        ax.set_xlabel(f"{cols}: block")
        ax.set_xticks(range(len(ticks)), ticks)
        ax.set_yticks(range(len(ticks)), ticks)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value < 0.6 else "black")
        ax.set_title(name.replace("_", " "), fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046)
    if out["source_note"]:
        fig.text(0.01, 0.01, f"source vs final: {out['source_note']}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _log(out: dict[str, Any], fig: Any, loggers: list[Any], step: int) -> None:
    metrics = {f"cka/{name}/block{i}": v for name in ("initial_vs_final", "source_vs_final")
               for i, v in enumerate(out[name] or [])}
    for logger in loggers:
        try:
            logger.log_metrics(metrics, step=step)
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_figure"):
                experiment.add_figure("cka/heatmap", fig, global_step=step, close=False)
        except Exception as err:  # noqa: BLE001 - the files hold the figures; a logger's refusal must not fail the run
            log.warning("could not log the CKA figures to %s: %s", type(logger).__name__, err)
