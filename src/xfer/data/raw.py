"""What a reader returns (``Raw``), and the shared steps that turn table rows into it: label
encoding, text cleaning across splits, group ids.

Readers turn files into raw arrays: images as uint8 [N, C, H, W], texts as lists of str. A reader
returns ``Raw``: its splits (at least "train"; "val" and "test" when the source defines them) and
the class names. The data modules do the splitting, subsetting and encoding. The image readers live
in ``readers_image`` and the text readers in ``readers_text``; both import this module, which
imports no reader.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from xfer.data.spec import SPLITS
from xfer.errors import DataError

if TYPE_CHECKING:  # pandas costs ~0.4 s and ~60 MiB to import: only the text readers use it, when they run
    import pandas as pd


@dataclass
class Raw:
    splits: dict[str, tuple[Any, np.ndarray]]
    class_names: list[str]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count, reported in results
    # split -> one group id (str) per item, when the reader was asked for a group column: items of one
    # group (a movie, an author) are never put in two splits. "" means "no group": the item stands alone.
    groups: dict[str, np.ndarray] | None = None
    # images read lazily: the splits hold file names (lists of str) and this turns one into uint8 [C, H, W]
    decode: Callable[[str], np.ndarray] | None = None
    # the files the reader read: with them, a text reader's output is kept between runs (``read_cache``)
    sources: list[str] = field(default_factory=list)


def label_order(values: Any) -> list[str]:
    """Class names in a stable order: numeric labels by value (so "10" follows "9"), else sorted."""
    names = sorted({str(v) for v in values})
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


def encode_labels(raw_labels: pd.Series, class_names: list[str] | None = None,
                  dataset: str = "data") -> tuple[np.ndarray, list[str]]:
    """Label indices into ``class_names`` (default: every label seen, see ``label_order``).

    A label outside given class names is an error, never a silent NaN or a wrong index."""
    as_text = raw_labels.astype(str)
    names = [str(n) for n in class_names] if class_names else label_order(as_text)
    index = {n: i for i, n in enumerate(names)}
    codes = as_text.map(index)
    if codes.isna().any():
        unknown = sorted(as_text[codes.isna()].unique())[:5]
        raise DataError(f"data set '{dataset}': labels {unknown} are not among its {len(names)} classes "
                        f"(first: {names[:5]}); check the label column or the class names")
    return codes.to_numpy(dtype=np.int64), names


def clean_texts(frame: pd.DataFrame, text: str, label: str, dataset: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop missing (or blank) labels, empty texts and exact duplicate texts (a duplicate could land
    in two splits and leak). Every drop is counted so the run can report it."""
    dropped: dict[str, int] = {}
    n = len(frame)
    labels = frame[label]
    blank = labels.isna() | (labels.astype(str).str.strip() == "")
    frame = frame[~blank]
    dropped["missing_label"] = n - len(frame)
    n = len(frame)
    texts = frame[text].fillna("").astype(str).str.strip()
    frame = frame.assign(**{text: texts})[texts.str.len() > 0]
    dropped["empty_text"] = n - len(frame)
    n = len(frame)
    conflicting = frame.groupby(text)[label].transform("nunique") > 1
    frame = frame[~conflicting].drop_duplicates(subset=text)
    dropped["duplicate_text"] = n - len(frame)
    if frame.empty:
        raise DataError(f"data set '{dataset}': no usable rows left after dropping {dropped}")
    return frame, {k: v for k, v in dropped.items() if v}


def clean_splits(frames: dict[str, pd.DataFrame], text: str, label: str, dataset: str
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """``clean_texts`` over all splits at once, so a text in both train and test is caught too: the
    first copy (train before val before test) stays, the others are counted as duplicates."""
    import pandas as pd
    order = [s for s in SPLITS if s in frames]
    tagged = pd.concat([frames[s].assign(_split=s) for s in order], ignore_index=True)
    clean, dropped = clean_texts(tagged, text, label, dataset)
    out = {s: clean[clean["_split"] == s].drop(columns="_split") for s in order}
    if out["train"].empty:
        raise DataError(f"data set '{dataset}': no usable training rows left after dropping {dropped}")
    return {s: f for s, f in out.items() if not f.empty}, dropped


def texts_to_raw(frames: dict[str, pd.DataFrame], text: str, label: str, dataset: str,
                 class_names: list[str] | None = None, extra_dropped: dict[str, int] | None = None,
                 group: str | None = None) -> Raw:
    """Clean every split together, then encode labels against one class list for all splits (so a
    class seen only in test stays visible and the data module refuses it). ``group`` names the
    column of group ids, carried along for grouped splitting."""
    import pandas as pd
    clean, dropped = clean_splits(frames, text, label, dataset)
    names = [str(n) for n in class_names] if class_names else label_order(
        pd.concat([f[label] for f in clean.values()]).astype(str))
    splits = {}
    for s, f in clean.items():
        codes, _ = encode_labels(f[label], names, dataset)
        splits[s] = (f[text].tolist(), codes)
    counts = {**{k: v for k, v in (extra_dropped or {}).items() if v}, **dropped}
    groups = None if group is None else {s: group_ids(f[group]) for s, f in clean.items()}
    return Raw(splits, names, counts, groups)


def group_ids(values: pd.Series) -> np.ndarray:
    """Group ids as stripped strings; a missing value becomes "" (no group)."""
    return values.fillna("").astype(str).str.strip().to_numpy(dtype=object)


def check_group_column(columns: Any, group: str | None, file: Any, dataset: str) -> None:
    if group is not None and group not in list(columns):
        raise DataError(f"data set '{dataset}': group_column={group!r} is not a column of {file}; its columns "
                        f"are {list(columns)[:10]}; set group_column to one of them, or null for no groups")
