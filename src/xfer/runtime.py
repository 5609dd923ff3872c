"""What this process is: its rank under DDP, whether it is a sweep job, its Hydra choices, its threads."""
from __future__ import annotations

import os
from typing import Any


def global_rank() -> int:
    """This process's rank in a multi-process (DDP) run launched by Lightning, torchrun or SLURM; 0 alone."""
    from pytorch_lightning.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _hydra() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get()
    except ValueError:  # not under Hydra (tests, notebooks)
        return None


def is_multirun() -> bool:
    hydra = _hydra()
    return hydra is not None and hydra.mode.name == "MULTIRUN"


def choice(group: str) -> str | None:
    """The config file chosen for ``group`` (``strategy`` -> ``lp_ft``), or None outside Hydra."""
    hydra = _hydra()
    return None if hydra is None else hydra.runtime.choices.get(group)


def job_threads(threads: int | None) -> int | None:
    """``threads`` if set; under the joblib launcher, the cores shared out so that jobs x threads <= cores;
    under a submitit launcher (local processes, SLURM), the job's ``cpus_per_task``."""
    if threads:
        return int(threads)
    hydra = _hydra()
    if hydra is None:
        return None
    launcher = hydra.launcher
    target = str(launcher.get("_target_", ""))
    if "submitit" in target:
        return int(launcher.get("cpus_per_task") or 0) or None
    if "joblib" not in target:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_jobs = int(launcher.get("n_jobs") or -1)
    n_jobs = cores if n_jobs < 1 else min(n_jobs, cores)
    return max(1, cores // n_jobs)
