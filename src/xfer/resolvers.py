"""The OmegaConf resolvers xfer's configs use. Registered once, when the package is imported: sweep jobs
that run in other processes (joblib, submitit) then resolve the run-folder names too, and Hydra hands
them the parent's resolver cache so every job agrees on the folder."""
from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf


def _sweep_dir(*args: Any) -> str:
    from xfer.sweep_resume import sweep_dir

    return sweep_dir(*args)


def _job_dir(default: str, *, _root_: Any) -> str:
    from xfer.sweep_resume import job_dir

    return job_dir(str(default), _root_)


def requeued() -> str | None:
    """``resume``'s default: ``last`` in a job SLURM has requeued (after a preemption or, through submitit's
    ``max_num_timeout``, a time limit; SLURM sets ``SLURM_RESTART_COUNT`` then), so it goes back to its own
    folder and continues from its last.ckpt, or is not retrained if it had finished; None otherwise."""
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restarts = 0
    return "last" if restarts > 0 else None


def register() -> None:
    if not OmegaConf.has_resolver("xfer_tag"):
        # cached: one random tag per process, so a run folder is named once and never collides with a
        # run started in the same second
        OmegaConf.register_new_resolver("xfer_tag", lambda: os.urandom(3).hex(), use_cache=True)
    if not OmegaConf.has_resolver("xfer_sweep_dir"):
        # resume=last in a sweep: the earlier sweep's folder (xfer.sweep_resume). Cached, so every job,
        # whose config Hydra composes later with the sweep's resolver cache, gets the folder the sweep chose
        OmegaConf.register_new_resolver("xfer_sweep_dir", _sweep_dir, use_cache=True)
    if not OmegaConf.has_resolver("xfer_requeued"):
        OmegaConf.register_new_resolver("xfer_requeued", requeued)
    if not OmegaConf.has_resolver("xfer_job_dir"):
        # resume=last in a sweep: the job's earlier folder, found by its overrides (xfer.sweep_resume)
        OmegaConf.register_new_resolver("xfer_job_dir", _job_dir)
