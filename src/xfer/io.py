"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash mid-write leaves at worst a stray ``.tmp`` file, never a half-written file under the real
name that a later run, the cache or the summarizer would trust. A write that fails for a full disk
raises ``DiskFullError`` naming the file, its size and the space left (``full_disk_named``).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from xfer.errors import DiskFullError


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    atomic_write_with(path, lambda fh: fh.write(data), len(data))


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], Any],
                      size: int | Callable[[], int | None] | None = None) -> None:
    """``write(fh)`` into a temp file beside ``path``, then fsync and rename it over ``path``, and fsync the
    folder (so that the rename outlives a power cut): a writer that streams (``torch.save``) needs no copy
    of its output in memory first. ``size``: the bytes it writes, or a function that tells them, for the
    full-disk message."""
    path = Path(path)
    with full_disk_named(path, size):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it is on disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def is_disk_full(err: BaseException | None) -> bool:
    """ENOSPC anywhere in ``err``'s chain: an OSError's errno, or the text of a library that reports it as
    a message (safetensors: ``No space left on device (os error 28)``)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _size(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} bytes"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} TB"


def failed_file(err: BaseException | None) -> str | None:
    """The file an OSError in ``err``'s chain names, if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.filename:
            return str(err.filename)
        err = err.__cause__ or err.__context__
    return None


def disk_full_error(path: str | os.PathLike, size: int | None = None, in_folder: bool = False) -> DiskFullError:
    """What a full disk means for the run: which file could not be written (``in_folder``: only the
    folder is known), how big it is, and the space its folder's file system has (``shutil.disk_usage``)."""
    path = Path(path)
    folder = path if in_folder else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
        space = f"{folder} has {_size(usage.free)} free of {_size(usage.total)}"
    except OSError:
        space = f"the space left in {folder} is unknown"
    needs = f" ({_size(size)})" if size else ""
    what = f"a file in {path}" if in_folder else str(path)
    return DiskFullError(f"no space left on the device to write {what}{needs}: {space}; free some space, or "
                         f"choose a home on another disk with XFER_HOME=<folder> or paths.root_dir=<folder>")


@contextmanager
def full_disk_named(path: str | os.PathLike, size: int | Callable[[], int | None] | None = None) -> Iterator[None]:
    """Around a write of ``path`` (``size`` bytes, when known, or a function that tells them, called only
    if the disk is full): a failure for want of space becomes one DiskFullError line that says what could
    not be written and the space left; libraries name neither."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise disk_full_error(path, size() if callable(size) else size) from err
