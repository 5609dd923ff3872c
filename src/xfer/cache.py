"""The trunk cache: source-stage weights stored under a key hashed from everything that shaped them.

An entry is a folder ``<root>/<key>/`` holding ``source_model.safetensors`` (adapter, trunk and head
of the source model; safetensors cannot run code when loaded) and ``meta.json`` (with the weights'
sha256, checked on every load, so a damaged or swapped weights file is refused). Entries are built
in a temp folder and renamed into place, so an entry either exists whole or not at all (a full disk
leaves none, and says so in one line); a file lock makes concurrent jobs with the same key wait for
the first instead of training twice.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xfer.errors import CacheError
from xfer.io import atomic_write_json, full_disk_named

CACHE_VERSION = 1  # bump when the source stage changes in a way configs do not show
MODEL_FILE, META_FILE = "source_model.safetensors", "meta.json"
CHECKSUM = "model_sha256"  # in meta.json: the sha256 of MODEL_FILE


def cache_key(shaping: dict[str, Any]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **shaping}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TrunkCache:
    """``lock_timeout_s``: how long a job waits for another job that is training the same key (runs take
    it from the config's ``trunk_cache_wait_s``; -1: no limit)."""

    def __init__(self, root: str | Path, lock_timeout_s: float = -1):
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s

    def entry(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.entry(key) / META_FILE).is_file() and (self.entry(key) / MODEL_FILE).is_file()

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock"), timeout=self.lock_timeout_s):
            yield

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        entry = self.entry(key)
        fix = "delete that folder to rebuild it"
        try:
            meta = json.loads((entry / META_FILE).read_text())
            expected = meta.get(CHECKSUM) if isinstance(meta, dict) else None
            if expected is not None and file_sha256(entry / MODEL_FILE) != expected:
                raise CacheError(f"trunk cache entry {entry} is damaged: {MODEL_FILE} does not match the "
                                 f"checksum in {META_FILE}; {fix}")
            state = load_file(str(entry / MODEL_FILE))
        except (SafetensorError, OSError, ValueError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise CacheError(f"trunk cache entry {entry} is unreadable ({reason}); {fix}") from None
        if not isinstance(meta, dict):
            raise CacheError(f"trunk cache entry {entry} is unreadable ({META_FILE} is not an object); {fix}")
        return state, meta

    def store(self, key: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        final = self.entry(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}.", suffix=".tmp"))
        try:
            with full_disk_named(final / MODEL_FILE, sum(v.numel() * v.element_size() for v in state.values())):
                save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp / MODEL_FILE))
            atomic_write_json(tmp / META_FILE, {**meta, CHECKSUM: file_sha256(tmp / MODEL_FILE)})
            if final.exists():  # a stale partial entry from an older layout; replace it whole
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def get_or_build(self, key: str, build: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
                     rank: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
        """(state, meta, hit). ``build`` runs at most once per key, even across processes.

        Under multi-process DDP every rank calls this: rank 0 trains under the lock and stores; the
        other ranks must join that same training, so they neither wait on the lock (rank 0 holds it
        while it waits for them) nor store."""
        if self.has(key):
            return (*self.load(key), True)
        if rank != 0:
            state, meta = build()
            return state, meta, False
        with self.lock(key):
            if self.has(key):
                return (*self.load(key), True)
            state, meta = build()
            self.store(key, state, meta)
            return state, meta, False
