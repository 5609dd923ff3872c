"""Resuming a sweep in its own folder: ``python train.py -m <the same args> resume=last``.

Hydra names a sweep folder by the time it starts and each job's folder by its number, so a rerun would
start a new sweep and train every job again. Two resolvers (conf/hydra/default.yaml) send it back
instead: ``hydra.sweep.dir`` becomes the newest earlier sweep folder of the experiment with the same
overrides (``sweep_dir``), and each job's ``hydra.sweep.subdir`` the earlier job folder with the job's
own overrides (``job_dir``), not its number, which a reordered list changes. There the job takes over
what its earlier attempt left (``earlier_attempt``): a finished run is not retrained, an interrupted or
failed one continues from its last.ckpt (``xfer.resume``), and a job with no folder starts afresh.

Overrides are compared less ``resume=``/``ckpt_path=`` and the settings a resume may change (paths,
threads, display). The light part of xfer: the resolvers run while Hydra composes, before torch loads.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xfer.argv import override_key

log = logging.getLogger(__name__)

# Keys that may differ between a run and its resumption: where things go and how they are shown.
RESUME_FREE = ("paths", "analysis", "resume", "ckpt_path", "threads", "objective", "eval_test", "hydra",
               "trainer.enable_progress_bar", "trainer.enable_model_summary")
ATTEMPT = "attempt_"  # <job>/.hydra/attempt_<n>/: the Hydra record of an earlier attempt, before a rerun rewrote it
_KEPT: set[str] = set()  # records kept by this process: a second resolution must not copy the rewritten one


def is_free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in RESUME_FREE)


def resuming(resume: Any, ckpt_path: Any) -> bool:
    """``resume=last`` or ``ckpt_path=last``: in a sweep, continue the earlier sweep with these settings."""
    return str(resume) == "last" or str(ckpt_path) == "last"


def canonical(override: str) -> str:
    """An override as Hydra means it: a sweep's values sorted and spelled one way (``seed=range(0,3)``,
    ``seed=2,0,1`` -> ``seed=0,1,2``); as given when Hydra's parser cannot expand it (a glob)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        [o] = OverridesParser.create().parse_overrides([override])
        values = sorted(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
    except Exception:  # noqa: BLE001
        return override
    return f"{override.split('=', 1)[0]}={','.join(values)}" if "=" in override else override


def overrides_key(overrides: Iterable[Any]) -> list[str]:
    """What identifies a sweep or a job by its overrides: the ones that shape a result, canonical and sorted
    (their order on the command line changes nothing but the job numbers)."""
    return sorted(canonical(str(o)) for o in overrides if not is_free(override_key(str(o)) or ""))


def _saved_overrides(path: Path, node: str | None) -> list[str] | None:
    from omegaconf import OmegaConf

    try:
        loaded = OmegaConf.load(path)
        found = loaded if node is None else OmegaConf.select(loaded, node)
        return overrides_key(found) if found is not None else None
    except Exception:  # noqa: BLE001 - an unreadable record matches nothing
        return None


def sweep_dir(parent: str, fresh: str, resume: Any, ckpt_path: Any, overrides: Iterable[Any]) -> str:
    """``hydra.sweep.dir``: ``<parent>/<fresh>``, or with resume=last the newest earlier sweep folder under
    ``parent`` (``<log_dir>/<experiment>/multiruns``) whose multirun.yaml has these overrides. Cached by
    its arguments' text, so every job of the sweep gets the folder the sweep chose."""
    if resuming(resume, ckpt_path):
        wanted = overrides_key(overrides)
        for earlier in sorted(Path(parent).glob("*/multirun.yaml"), reverse=True):  # names start with the time
            if _saved_overrides(earlier, "hydra.overrides.task") == wanted:
                log.info("resume=last: continuing the sweep in %s", earlier.parent)
                return f"{parent}/{earlier.parent.name}"
        log.info("resume=last: no earlier sweep under %s has these overrides; starting a new one", parent)
    return f"{parent}/{fresh}"


def job_dir(default: str, root: Any) -> str:
    """``hydra.sweep.subdir``: ``default`` (``<num>_<strategy>_f<fraction>_s<seed>``), or in a resumed
    sweep the earlier job folder with this job's overrides; a new job whose default name another job's
    folder has gets ``<default>_2``. The earlier attempt's Hydra record, which Hydra rewrites as the job
    starts, is kept first in ``.hydra/attempt_<n>/``."""
    hydra = root.hydra
    if not resuming(root.get("resume"), root.get("ckpt_path")):
        return default
    sweep, wanted = Path(str(hydra.sweep.dir)), overrides_key(hydra.overrides.task)
    taken = set()
    for saved in sorted(sweep.glob("*/.hydra/overrides.yaml")):
        job = saved.parents[1]
        if _saved_overrides(saved, None) == wanted:
            keep_record(job / ".hydra")
            return job.name
        taken.add(job.name)
    name, n = default, 1
    while name in taken:
        n += 1
        name = f"{default}_{n}"
    return name


def keep_record(record: Path) -> Path:
    """Copy ``<job>/.hydra/*.yaml`` into ``<job>/.hydra/attempt_<n>/`` (n = 1, 2, ...), once per process;
    the copy."""
    if str(record.resolve()) in _KEPT:
        return earlier_config(record.parent).parent
    _KEPT.add(str(record.resolve()))
    n = 1 + sum(1 for p in record.glob(f"{ATTEMPT}*") if p.is_dir())
    dest = record / f"{ATTEMPT}{n}"
    dest.mkdir()
    for f in sorted(record.glob("*.yaml")):
        shutil.copy2(f, dest / f.name)
    return dest


def earlier_config(run_dir: Path) -> Path:
    """The config an earlier attempt of this job ran with: its newest ``.hydra/attempt_<n>/config.yaml``,
    else ``.hydra/config.yaml``."""
    record = run_dir / ".hydra"
    attempts = [p for p in record.glob(f"{ATTEMPT}*") if p.is_dir() and p.name[len(ATTEMPT):].isdigit()]
    if attempts:
        return max(attempts, key=lambda p: int(p.name[len(ATTEMPT):])) / "config.yaml"
    return record / "config.yaml"


def earlier_attempt(cfg: Any, run_dir: Path, rank: int = 0) -> dict[str, Any] | None:
    """In a resumed sweep, what this job's folder holds from an earlier attempt. A finished run
    (results.json ``status: ok``): its results, marked ``already_done``, so the job is not retrained. Any
    other results.json (failed, interrupted, torn) is kept as ``results.<status>.json`` (rank 0 alone
    renames) and None returned: the job runs, from its last.ckpt when it has one."""
    from xfer.results import FILE
    from xfer.runtime import is_multirun

    path = Path(run_dir) / FILE
    if not (is_multirun() and resuming(cfg.get("resume"), cfg.get("ckpt_path")) and path.is_file()):
        return None
    try:
        earlier = json.loads(path.read_text())
        status = str(earlier.get("status") or "unreadable") if isinstance(earlier, dict) else "unreadable"
        status = status if status.isidentifier() else "unreadable"  # part of a file name
    except (OSError, ValueError):
        earlier, status = None, "unreadable"
    if status == "ok" and isinstance(earlier, dict):
        return {**earlier, "already_done": True}
    if rank == 0:
        kept, n = path.with_name(f"results.{status}.json"), 1
        while kept.exists():
            n += 1
            kept = path.with_name(f"results.{status}.{n}.json")
        os.replace(path, kept)
        log.info("resume: the earlier attempt's results.json (status %s) is kept as %s", status, kept.name)
    return None
