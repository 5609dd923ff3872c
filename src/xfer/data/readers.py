"""Reader functions as values: each one named for messages, its arguments, what identifies it in a
fingerprint, and the reader named after a data set.

A data set config names its reader as a nested node that Hydra turns into a ``functools.partial``
(``reader: {_target_: xfer.data.readers_text.read_csv_text, _partial_: true, path: ..., ...}``); the
data module calls it to get a ``Raw``. The readers themselves live in ``readers_image`` and
``readers_text``; this module imports them and nothing imports it back.
"""
from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

from xfer.data import readers_image, readers_text
from xfer.data.raw import Raw
from xfer.errors import DataError

Reader = Callable[..., Raw]
PREFIX = "read_"
MODULES: tuple[ModuleType, ...] = (readers_image, readers_text)


def function(reader: Reader) -> Callable[..., Raw]:
    """The reader function behind a (possibly partial) reader."""
    while isinstance(reader, functools.partial):
        reader = reader.func
    return reader


def label(reader: Reader) -> str:
    """A reader's short name in messages: ``read_mnist5k`` -> ``mnist5k``."""
    name = getattr(function(reader), "__name__", repr(reader))
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def takes(reader: Reader, argument: str) -> bool:
    """Whether the reader still takes ``argument`` (a keyword it names, or any keyword)."""
    params = inspect.signature(reader).parameters.values()
    return any(p.name == argument or p.kind is p.VAR_KEYWORD for p in params)


def identity(reader: Reader) -> str:
    """The reader function and the arguments it is bound to, as a stable string: a fingerprint of
    which file is read and how."""
    fn = function(reader)  # a partial of a partial is flattened by functools itself
    args: tuple[Any, ...] = reader.args if isinstance(reader, functools.partial) else ()
    kwargs: dict[str, Any] = reader.keywords if isinstance(reader, functools.partial) else {}
    target = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    return json.dumps([target, args, kwargs], sort_keys=True, default=repr)


def is_reader(fn: Any) -> bool:
    """A reader function: ``read_<name>(path, ...)`` (file-level helpers such as ``read_idx`` take a file)."""
    if not (inspect.isfunction(fn) and fn.__name__.startswith(PREFIX)):
        return False
    first = next(iter(inspect.signature(fn).parameters), None)
    return first == "path"


def known() -> dict[str, Reader]:
    """Every reader function of the reader modules, by its short name."""
    return {label(fn): fn for module in MODULES for fn in vars(module).values()
            if is_reader(fn) and fn.__module__ == module.__name__}


def named(name: str) -> Reader:
    """The reader named after data set ``name`` (``read_<name>``), for data modules built in code."""
    readers = known()
    if name not in readers:
        raise DataError(f"data set '{name}': no reader is named after it; pass reader=<a reader function>, "
                        f"e.g. xfer.data.readers_text.read_csv_text, or use one of {', '.join(sorted(readers))}")
    return readers[name]


def with_groups() -> list[str]:
    """The short names of the readers that read a column of group ids."""
    return sorted(n for n, fn in known().items() if takes(fn, "group_column"))
