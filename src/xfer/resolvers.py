"""The OmegaConf resolvers xfer's configs use. Registered once, when the package is imported: sweep jobs
that run in other processes (joblib, submitit) then resolve the run-folder names too, and Hydra hands
them the parent's resolver cache so every job agrees on the folder."""
from __future__ import annotations

import os

from omegaconf import OmegaConf


def register() -> None:
    if not OmegaConf.has_resolver("xfer_tag"):
        # cached: one random tag per process, so a run folder is named once and never collides with a
        # run started in the same second
        OmegaConf.register_new_resolver("xfer_tag", lambda: os.urandom(3).hex(), use_cache=True)
