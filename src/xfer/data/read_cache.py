"""The read cache: a text reader's output (its ``Raw``) kept between runs, so a warm run skips the parse.

Reading a text set means importing pandas (~0.4 s, ~60 MiB) and parsing its files (0.2 s for the
Rotten Tomatoes snippets, minutes for DBpedia) in every run and every sweep job, though the result is
the same each time. The data module asks ``load`` first and ``store``s what the reader returned.

An entry is one JSON file, ``<dir>/<data set>_<key>.json``. The key hashes what decides the output
other than the files' bytes: the reader and its arguments, the settings handed to it (``group_column``),
the source code of the reader's module and of ``xfer.data.raw``, and pandas' version. The entry lists
the files the reader read (``Raw.sources``; a reader given a folder lists the folder too, so a split
file added to it is seen) with their size and modification time; one that has changed since or gone
makes the entry stale, and the reader runs again and replaces it (a rewrite of the same size within the
file system's timestamp resolution is not seen; a file modified while the reader ran, in the 2 s before
it or dated in the future is not kept, and the next run reads it again). Only readers that name their files, and only texts
(lists of str), are cached: images, lazily decoded files and Hugging Face datasets are read as before. A torn or foreign entry is read again from the files; a
full disk while storing costs the cache, not the run (a warning).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from xfer.data import raw as raw_module
from xfer.data import readers
from xfer.data.raw import Raw
from xfer.data.readers import Reader
from xfer.errors import DiskFullError
from xfer.io import atomic_write_bytes

log = logging.getLogger(__name__)

VERSION = 2  # bump when the entry's layout changes
MARGIN_NS = 2_000_000_000  # a file modified this close to the read (or after it) is not kept


def _stat(path: str | os.PathLike) -> list[Any]:
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def _code(reader: Reader) -> str:
    """sha256 of the source files the reader's output depends on."""
    digest = hashlib.sha256()
    try:
        own = inspect.getsourcefile(readers.function(reader))
    except TypeError:  # a builtin or a callable object: no source to follow, so a key that never repeats
        return f"no source: {id(reader)}"
    for module_file in (own, raw_module.__file__):
        try:
            digest.update(Path(module_file).read_bytes() if module_file else b"?")
        except OSError:
            digest.update(b"?")
    return digest.hexdigest()


def key(reader: Reader, handed: dict[str, Any]) -> str:
    try:
        pandas = metadata.version("pandas")
    except metadata.PackageNotFoundError:
        pandas = None
    blob = json.dumps({"version": VERSION, "reader": readers.identity(reader), "handed": handed,
                       "code": _code(reader), "pandas": pandas}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def safe_name(name: str) -> str:
    """A data set's name as a file-name part (the encode cache's entries use it too)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def first_line(err: BaseException) -> str:
    """What a cache warning says of ``err``: its first line, or its type where it has no message."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def entry(folder: str | os.PathLike, name: str, reader: Reader, handed: dict[str, Any]) -> Path:
    return Path(folder).expanduser() / f"{safe_name(name)}_{key(reader, handed)}.json"


def cacheable(raw: Raw) -> bool:
    """Texts from named files: what an entry can hold and check."""
    return bool(raw.sources) and raw.decode is None and all(
        isinstance(items, list) and all(isinstance(t, str) for t in items) for items, _ in raw.splits.values())


def load(path: Path) -> Raw | None:
    """The ``Raw`` stored at ``path`` when it is whole and its files are unchanged; else None."""
    try:
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return None
        if len(data["files"]) != len(data["sources"]):
            raise ValueError("files and sources differ")
        # each path as the reader was given it, from here: another folder's relative path, or a symlink
        # pointed elsewhere, resolves to another file and misses
        for given, source in zip(data["files"], data["sources"]):
            try:
                if _stat(given) != source:
                    log.info("read cache %s: %s has changed since; reading it again", path.name, source[0])
                    return None
            except OSError:
                return None
        splits, groups = {}, {}
        for split, part in data["splits"].items():
            items, labels = part["items"], np.asarray(part["labels"], dtype=np.int64)
            if len(items) != len(labels) or not all(isinstance(t, str) for t in items):
                raise ValueError(f"split {split!r} does not match its labels")
            splits[split] = (items, labels)
            if part.get("groups") is not None:
                groups[split] = np.asarray(part["groups"], dtype=object)
        if groups and set(groups) != set(splits):
            raise ValueError("groups for some splits only")
        return Raw(splits, list(data["class_names"]), dict(data["dropped"]), groups or None,
                   sources=list(data["files"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # torn, foreign, hand-edited
        log.warning("read cache %s is unreadable (%s): reading the data again", path, err)
        return None


def store(path: Path, raw: Raw, read_started_ns: int | None = None) -> bool:
    """Keep ``raw`` at ``path`` (atomically) when it is cacheable; False where it is not, where a file it was
    read from was modified from ``MARGIN_NS`` before ``read_started_ns`` (``time.time_ns()`` before the
    reader ran) on: the read may hold half of an edit, and the entry would record the edited file as read;
    or where the write failed."""
    if not cacheable(raw):
        return False
    try:
        sources = [_stat(s) for s in raw.sources]
        # file systems stamp from a coarse clock (a tick behind time.time_ns(); 1-2 s on FAT, HFS+ and some
        # network shares): anything modified from MARGIN_NS before the read on, or dated in the future, may
        # be half an edit. Such a file is read again by the next run, and kept once it has settled.
        changed = [s[0] for s in sources if read_started_ns is not None and s[2] >= read_started_ns - MARGIN_NS]
        if changed:
            log.info("read cache: %s changed while it was read, or just before; not kept, the next run reads it "
                     "again", changed[0])
            return False
        data = {"version": VERSION, "sources": sources, "files": [str(f) for f in raw.sources],
                "class_names": list(raw.class_names), "dropped": {k: int(v) for k, v in raw.dropped.items()},
                "splits": {s: {"items": items, "labels": np.asarray(labels).astype(np.int64).tolist(),
                               "groups": None if raw.groups is None else [str(g) for g in raw.groups[s]]}
                           for s, (items, labels) in raw.splits.items()}}
        atomic_write_bytes(path, json.dumps(data, ensure_ascii=False).encode("utf-8"))
        return True
    # a full disk, a read-only folder, texts UTF-8 cannot hold (lone surrogates): this run goes on, the next
    # reads the files again
    except (OSError, ValueError, DiskFullError) as err:
        log.warning("read cache: could not keep %s (%s); the next run reads the data again",
                    path, first_line(err))
        return False
