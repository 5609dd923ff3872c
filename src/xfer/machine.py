"""What a run needs of this machine, checked at load, before anything trains: the accelerator (and
device count) the trainer asks for, folders it can write, and memory for what a setting makes it
allocate (``check_memory``). Each missing piece is one ``ConfigError`` line (exit 2) that names the
setting and what this machine offers, instead of a traceback after the source stage has trained (``No
supported gpu backend found!``), four of them when the home is read-only, or the kernel's out-of-memory
killer (exit 137, no message at all) for ``target.max_len=100000000``."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from xfer.errors import ConfigError
from xfer.io import _size

MEMORY_SHARE = 0.8  # refuse a setting whose estimate is above this share of the available memory
HOME_HINT = "choose a writable home with XFER_HOME=<folder> or paths.root_dir=<folder>"
# errno values that mean a folder cannot be written to (a file standing where a folder should be counts);
# a full disk (ENOSPC) is xfer.io's
_UNWRITABLE = {errno.EROFS: "a read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ENOTDIR: "a file is in the way of a folder",
               errno.EEXIST: "a file is in the way of a folder"}


def accelerators_here() -> list[str]:
    """The ``trainer.accelerator`` values this machine can run (``auto`` aside): cpu, and gpu/cuda/mps/tpu
    where Lightning finds the device."""
    from pytorch_lightning.accelerators import AcceleratorRegistry

    found = {n for n in AcceleratorRegistry.available_accelerators()
             if AcceleratorRegistry[n]["accelerator"].is_available()}
    if found & {"cuda", "mps"}:
        found.add("gpu")  # Lightning's gpu: cuda, else mps
    order = ["cpu", "gpu", "cuda", "mps", "tpu"]
    return sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n))


def _missing(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda"):
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = f" (CUDA_VISIBLE_DEVICES={hidden!r})" if hidden is not None else ""
        return f"no CUDA GPU{' or Apple MPS device' if accelerator == 'gpu' else ''} is visible on this machine{why}"
    if accelerator == "mps":
        return "Apple's MPS device is not available on this machine"
    return f"no {accelerator.upper()} device is visible on this machine"


def check_accelerator(trainer: DictConfig) -> None:
    """``trainer.accelerator`` (and, for CUDA, ``trainer.devices``) must name what this machine has."""
    from pytorch_lightning.accelerators import AcceleratorRegistry

    accelerator = trainer.get("accelerator", "auto")
    if not isinstance(accelerator, str) or accelerator.lower() in ("auto", "cpu"):
        return
    name = accelerator.lower()
    here = accelerators_here()
    known = sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
    if name not in known:
        raise ConfigError(f"trainer.accelerator={accelerator}: not an accelerator; allowed: {', '.join(known)} "
                          f"(this machine: {', '.join(here)})")
    if name not in here:
        raise ConfigError(f"trainer.accelerator={accelerator}: {_missing(name)}; allowed here: {', '.join(here)} "
                          f"(or auto)")
    import torch

    devices = trainer.get("devices", "auto")
    if name in ("gpu", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        wanted = (int(devices) if isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit())
                  else len(devices) if not isinstance(devices, str) else None)
        if wanted is not None and wanted > count:
            raise ConfigError(f"trainer.devices={devices}: this machine has {count} CUDA GPU{'s' * (count != 1)}; "
                              f"allowed here: 1..{count}, -1 (all of them) or auto")


def unwritable(err: OSError) -> str | None:
    """The one-line reason an OSError says a folder cannot be written (read-only, no permission, a file
    in the way), naming the path; None for any other error."""
    reason = _UNWRITABLE.get(err.errno or 0)
    if reason is None or not err.filename:
        return None
    return f"cannot write to {_blocking(Path(err.filename), reason)}; {HOME_HINT}"


def _blocking(path: Path, reason: str) -> str:
    """The folder that refused the write (the nearest existing one on ``path``), or the file in the way."""
    while not path.exists() and path != path.parent:
        path = path.parent
    if path.exists() and not path.is_dir():
        return f"{path} (it is a file, not a folder)"
    return f"{path} ({reason})"


def check_writable(folder: str | os.PathLike, setting: str) -> None:
    """``folder`` can take a new file: a real write (of an empty file, removed at once), because
    ``os.access`` says yes to root on a folder that is chmod 0555. A folder not made yet is tried in its
    nearest existing parent, where it would be made, so the check leaves nothing behind."""
    path = Path(folder)
    base = path
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".xfer-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = _UNWRITABLE.get(err.errno or 0)
        if reason is None:
            raise
        where = _blocking(Path(err.filename or base), reason)
        raise ConfigError(f"{setting}={path}: cannot write to {where}; {HOME_HINT} or {setting}=<folder>") from None


def check(cfg: DictConfig) -> None:
    """Everything this machine must offer the run, before anything trains: the accelerator, and a trunk
    cache it can write (the run's own folder is Hydra's, made before the job starts)."""
    check_accelerator(cfg.trainer)
    if cfg.source_stage.enabled:
        check_writable(cfg.paths.cache_dir, "paths.cache_dir")


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")
                     ) -> tuple[int, str] | None:
    """The memory this process can still take, in bytes, and where that figure comes from: MemAvailable
    in /proc/meminfo (Linux), lowered to what is left under a cgroup limit (a container, a SLURM job);
    elsewhere the free physical pages (``os.sysconf``). None when none of them can be read."""
    found = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = (int(line.split()[1]) * 1024, "MemAvailable")
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical memory")
        except (OSError, ValueError, AttributeError):
            return None
    for limit, used in (("memory.max", "memory.current"),  # cgroup v2, then v1
                        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            left = int((cgroup / limit).read_text()) - int((cgroup / used).read_text())
        except (OSError, ValueError):  # no such cgroup file, or "max" (no limit)
            continue
        if 0 <= left < found[0]:
            found = (left, "left under the cgroup memory limit")
        break
    return found


def memory_fits(need: float) -> bool:
    """Whether ``need`` bytes are within ``MEMORY_SHARE`` of the available memory (True when it cannot be
    read): what check_memory refuses, asked without refusing."""
    free = available_memory()
    return free is None or need <= MEMORY_SHARE * free[0]


def check_memory(setting: str, need: float, what: str, allowed: Callable[[float], str] | None = None) -> None:
    """Refuse ``setting`` in one line when the ``need`` bytes it makes the run allocate (``what``) exceed
    ``MEMORY_SHARE`` of the available memory: checked before allocating, as the kernel would otherwise
    kill the process without a word. ``allowed(budget)`` says what would fit in ``budget`` bytes. Nothing
    is refused when the available memory cannot be read."""
    free = available_memory()
    if free is None or need <= MEMORY_SHARE * free[0]:
        return
    hint = f"; allowed here: {allowed(MEMORY_SHARE * free[0])}" if allowed else ""
    raise ConfigError(f"{setting}: {what} needs about {_size(need)} of memory, but {_size(free[0])} is available "
                      f"({free[1]}; a run may take {MEMORY_SHARE:.0%} of it){hint}")


def _tree_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def sweep_disk_need(experiment_logs: Path, jobs: int) -> tuple[int, Path] | None:
    """What ``jobs`` new jobs of an experiment will write, estimated from the newest finished run under
    ``experiment_logs`` (``<log_dir>/<experiment>``: its folder's size, checkpoints and all), and that run;
    None when the experiment has no finished run to go by."""
    import json

    newest = None
    for path in Path(experiment_logs).glob("**/results.json"):
        try:
            if json.loads(path.read_text()).get("status") != "ok":
                continue
            mtime = path.stat().st_mtime
        except (OSError, ValueError, AttributeError):
            continue
        if newest is None or mtime > newest[0]:
            newest = (mtime, path.parent)
    if newest is None:
        return None
    return jobs * _tree_bytes(newest[1]), newest[1]


def check_sweep_disk(sweep_dir: Path, experiment_logs: Path, jobs: int) -> None:
    """Refuse, in one line and before any job starts, a sweep whose estimated writes (``sweep_disk_need``)
    exceed the free space where it writes. Nothing is refused without an estimate."""
    from xfer.errors import InputError

    estimate = sweep_disk_need(experiment_logs, jobs) if jobs > 0 else None
    if estimate is None:
        return
    need, like = estimate
    existing = Path(sweep_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need <= free:
        return
    raise InputError(f"not enough disk for this sweep: {jobs} jobs need about {_size(need)} ({_size(need / jobs)} "
                     f"each, as {like} wrote), but {existing} has {_size(free)} free; free some space, choose a home "
                     f"on another disk (XFER_HOME or paths.root_dir), or keep one checkpoint per stage "
                     f"(callbacks.checkpoint.save_last=false)")


def vm_rss_bytes(pid: int | str = "self") -> int | None:
    """A process's resident memory now (``VmRSS`` of /proc/<pid>/status), in bytes; None where it cannot
    be read (no /proc, not Linux; a process that has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def rss_mib() -> float | None:
    """This process's resident memory now, in MiB; None where there is no /proc (not Linux)."""
    rss = vm_rss_bytes()
    return None if rss is None else round(rss / 2**20, 1)


def process_state() -> dict[str, int | float | None]:
    """What a run leaves in its process, recorded in results.json at its end: a sweep whose jobs share one
    process (Hydra's basic launcher, a joblib worker) shows here whether memory, open files, threads or
    logging handlers grow from job to job."""
    import logging
    import sys
    import threading

    try:
        files: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        files = None
    torch = sys.modules.get("torch")
    handlers = sum(len(logging.getLogger(name).handlers) for name in ("", "xfer", "pytorch_lightning"))
    return {"rss_mib": rss_mib(), "open_files": files,
            "threads": threading.active_count(), "log_handlers": handlers,
            "torch_threads": torch.get_num_threads() if torch is not None else None}
