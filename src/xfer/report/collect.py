"""Reading a sweep's runs: every results.json under one or more folders, the jobs that have none yet,
and the Hydra overrides each job was started with. Nothing here computes a statistic."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from xfer.errors import ReportError

Folders = str | Path | Iterable[str | Path]

# overrides already shown as the strategy, the data size or the unit (seed, split_seed), or that only
# say how the sweep ran; any other override that differs between jobs splits groups
_SHOWN = ("strategy", "seed", "target.split_seed", "target.fraction", "target.samples_per_class", "experiment",
          "sweep", "hparams_search", "hydra/launcher", "hydra.launcher", "hydra.sweeper")
DIR = "_dir"  # key added to each run: the folder its results.json was read from
OVERRIDES = "_overrides"  # key added to each run: its overrides.yaml entries not in _SHOWN



def as_folders(folders: Folders) -> list[Path]:
    return [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]


def collect(folders: Folders) -> tuple[list[dict[str, Any]], list[str]]:
    """All results.json under the folders (recursively), and the job folders that have none yet or a
    torn one (running or killed). Each run gets ``_dir`` (where it was read) and ``_overrides``."""
    runs: list[dict[str, Any]] = []
    incomplete: list[str] = []
    seen: set[Path] = set()
    for folder in as_folders(folders):
        for path in sorted(folder.rglob("results.json")):
            if path.resolve() in seen:  # overlapping folders: read each file once
                continue
            seen.add(path.resolve())
            try:
                run = json.loads(path.read_text())
            except (OSError, ValueError):
                incomplete.append(str(path.parent))
                continue
            if not isinstance(run, dict):
                incomplete.append(str(path.parent))
                continue
            run[DIR] = str(path.parent)
            run[OVERRIDES] = _overrides(path.parent)
            runs.append(run)
    done = {str(Path(r.get("run_dir", "")).resolve()) for r in runs}
    for folder in as_folders(folders):
        for cfg in sorted(folder.rglob(".hydra/config.yaml")):
            job = cfg.parent.parent
            if (str(job.resolve()) not in done and not (job / "results.json").exists()
                    and str(job) not in incomplete):
                incomplete.append(str(job))
    return runs, incomplete


def _overrides(run_dir: Path) -> list[str]:
    try:
        lines = (run_dir / ".hydra" / "overrides.yaml").read_text().splitlines()
    except OSError:
        return []
    items = [line[2:].strip().strip("'\"") for line in lines if line.startswith("- ")]
    return [o for o in items if not o.lstrip("+~").startswith(_SHOWN)]


def strategy_overrides(run: dict[str, Any]) -> dict[str, str]:
    """``strategy.<key>=<value>`` overrides of a run; a failed run's results.json has only the name."""
    path = Path(run.get(DIR, run.get("run_dir", ""))) / ".hydra" / "overrides.yaml"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        item = line[2:].strip().strip("'\"").lstrip("+~") if line.startswith("- ") else ""
        if item.startswith("strategy.") and "=" in item:
            key, value = item[len("strategy."):].split("=", 1)
            out[key] = value
    return out


def unit(run: dict[str, Any]) -> tuple[int, int]:
    """The unit a run is paired on: (seed, split_seed); runs from before split_seed was recorded used 0.
    A run without a seed cannot be paired: guessing 0 would pair it with another run's seed 0."""
    seed = run.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ReportError(f"{run.get(DIR, run.get('run_dir', '?'))}/results.json has seed={seed!r}; allowed: an "
                          "integer (every run records its seed); fix or remove that run folder")
    return seed, int(run.get("split_seed") or 0)


def data_size(run: dict[str, Any]) -> Any:
    spc = run.get("samples_per_class")
    return f"{spc}/class" if spc else run.get("fraction")


def fingerprint(run: dict[str, Any]) -> str | None:
    return ((run.get("target") or {}).get("test_ids")) or None


def load_predictions(run: dict[str, Any], split: str = "test") -> dict[str, np.ndarray] | None:
    """A run's saved predictions on one split, sorted by example index; None when it saved none or the
    file is unreadable (an old run, a torn copy)."""
    name = run.get("predictions")
    if not name:
        return None
    try:
        with np.load(Path(run[DIR]) / name) as npz:
            arrays = {k: np.asarray(npz[f"{split}_{k}"]) for k in ("index", "label", "pred")}
            if f"{split}_group" in npz.files:  # clustered examples (a grouped split): resample whole groups
                arrays["group"] = np.asarray(npz[f"{split}_group"])
    except (OSError, KeyError, ValueError):
        return None
    order = np.argsort(arrays["index"], kind="stable")
    return {k: v[order] for k, v in arrays.items()}
