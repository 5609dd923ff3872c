"""The encode cache: a text set's fitted tokenizer and token ids kept between runs.

Fitting the word-level tokenizer on the training split and encoding every split takes 0.5-0.8 s for
the Rotten Tomatoes snippets on 2 cores, in every run and every sweep job, though the result is the same
whenever the texts and settings are. ``TextDataModule.encode`` asks ``load`` first and ``store``s what
it computed.

Unlike the read cache, an entry needs no check against files: its key hashes the very input of the
encoding, the texts of each split in order, with the settings (``max_len``, ``vocab_size``,
``min_frequency``, ``lowercase``), the tokenizers library's version and the source of ``xfer.data.text``.
Same key, same input, same output. An entry is ``<dir>/<data set>_enc_<key>.pt``: the tokenizer as its
JSON and the ids of each split in the smallest integer type that holds the vocabulary (int64 again on
load). Each training subset (seed, fraction) has its own; the least recently used go once the entries
pass ``BUDGET_BYTES`` together. A torn or foreign entry is encoded again; a full disk while storing
costs the entry, not the run (a warning).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from xfer.data.read_cache import first_line, safe_name
from xfer.errors import DiskFullError
from xfer.io import atomic_write_bytes

log = logging.getLogger(__name__)

VERSION = 1  # bump when the entry's layout changes
BUDGET_BYTES = 512 * 2**20  # the encode entries of one folder together; the least recently used go first
SUFFIX = ".pt"


def _source(code_file: str | os.PathLike | None) -> bytes:
    try:
        return Path(code_file).read_bytes() if code_file else b"?"
    except OSError:
        return b"?"


def tokenizers_version() -> str:
    """The installed tokenizers' version: its distribution's, else the module's ``__version__``, else (a
    build that names none) the sha256 of its compiled extension, so that no two builds share entries."""
    try:
        return metadata.version("tokenizers")
    except metadata.PackageNotFoundError:
        pass
    import tokenizers

    if getattr(tokenizers, "__version__", None):
        return str(tokenizers.__version__)
    binary = getattr(getattr(tokenizers, "tokenizers", None), "__file__", None) or tokenizers.__file__
    try:
        return "sha256:" + hashlib.sha256(Path(binary).read_bytes()).hexdigest()
    except (OSError, TypeError):  # not readable: its place, so that at least no other build shares the key
        return f"unread:{binary}"


def key(texts: dict[str, list[str]], settings: dict[str, Any], code_file: str | os.PathLike | None = None) -> str:
    """sha256 of everything the encoding depends on: the texts of each split in order, the settings, the
    tokenizers version and the source of ``code_file`` (the module that fits and encodes: xfer.data.text)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": VERSION, "settings": settings, "tokenizers": tokenizers_version()},
                             sort_keys=True, default=repr).encode())
    digest.update(hashlib.sha256(_source(code_file)).digest())
    digest.update(hashlib.sha256(_source(__file__)).digest())  # this module: the entry's layout, the narrowing
    for split in sorted(texts):
        items = texts[split]
        digest.update(b"\x00split" + len(items).to_bytes(8, "little") + split.encode("utf-8", "surrogatepass"))
        for t in items:  # streamed, each text length-prefixed: no two lists of texts give the same bytes
            b = str(t).encode("utf-8", "surrogatepass")
            digest.update(len(b).to_bytes(8, "little") + b)
    return digest.hexdigest()[:24]


def entry(folder: str | os.PathLike, name: str, texts: dict[str, list[str]], settings: dict[str, Any],
          code_file: str | os.PathLike | None = None) -> Path:
    return Path(folder).expanduser() / f"{safe_name(name)}_enc_{key(texts, settings, code_file)}{SUFFIX}"


def _narrow(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    for dtype in (torch.int16, torch.int32):
        if vocab - 1 <= torch.iinfo(dtype).max:
            return ids.to(dtype)
    return ids


def load(path: Path, rows: dict[str, int], max_len: int) -> tuple[Tokenizer, dict[str, torch.Tensor]] | None:
    """The tokenizer and the int64 ids of each split stored at ``path``, when it is whole and fits ``rows``
    (texts per split) and ``max_len``, and the ids fit the tokenizer's vocabulary; else None."""
    try:
        try:
            blob = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):  # none yet, or just trimmed by another job
            return None
        data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data["tokenizer"], str):
            return None
        tokenizer = Tokenizer.from_str(data["tokenizer"])
        vocab = tokenizer.get_vocab_size()
        if (tokenizer.padding or {}).get("length") != max_len:
            raise ValueError(f"a tokenizer that pads to {(tokenizer.padding or {}).get('length')}, not {max_len}")
        ids = {}
        for split, n in rows.items():
            part = data["ids"][split]
            if not isinstance(part, torch.Tensor) or tuple(part.shape) != (n, max_len) or part.is_floating_point():
                raise ValueError(f"split {split!r} has ids of shape {tuple(getattr(part, 'shape', ()))}")
            if part.numel() and not (0 <= int(part.min()) and int(part.max()) < vocab):
                raise ValueError(f"split {split!r} has ids outside the vocabulary of {vocab}")
            ids[split] = part.to(torch.int64)
        if set(data["ids"]) != set(rows):
            raise ValueError("other splits")
        try:
            os.utime(path)  # used now: the last to go when the folder is over its budget
        except OSError:
            pass
        return tokenizer, ids
    except Exception as err:  # torn, foreign, hand-edited: torch.load raises many kinds  # noqa: BLE001
        log.warning("encode cache %s is unreadable (%s): encoding the texts again", path,
                    first_line(err))
        return None


def store(path: Path, tokenizer_json: str, vocab_size: int, ids: dict[str, torch.Tensor]) -> bool:
    """Keep the tokenizer and ids at ``path`` (atomically), then trim the folder to its budget; False where
    the write failed."""
    try:
        buffer = io.BytesIO()
        torch.save({"version": VERSION, "tokenizer": tokenizer_json,
                    "ids": {s: _narrow(t, vocab_size).contiguous() for s, t in ids.items()}}, buffer)
        atomic_write_bytes(path, buffer.getbuffer())
    except (OSError, ValueError, DiskFullError) as err:  # a full disk, a read-only folder: this run goes on
        log.warning("encode cache: could not keep %s (%s); the next run encodes the texts again",
                    path, first_line(err))
        return False
    trim(path.parent, keep=path)
    return True


def trim(folder: Path, keep: Path | None = None, budget: int = BUDGET_BYTES) -> list[Path]:
    """Delete the least recently used encode entries of ``folder`` until they total at most ``budget``
    bytes (``keep`` stays, whatever its size); the paths deleted."""
    found = []
    for p in folder.glob(f"*_enc_*{SUFFIX}"):
        try:
            st = p.stat()
        except OSError:  # deleted meanwhile by another job's trim
            continue
        found.append((st.st_mtime_ns, st.st_size, p))
    total, gone = sum(size for _, size, _ in found), []
    for _, size, p in sorted(found, key=lambda f: f[0]):
        if total <= budget:
            break
        if keep is not None and p == keep:
            continue
        try:
            p.unlink()
        except OSError:
            continue
        total -= size
        gone.append(p)
    return gone
