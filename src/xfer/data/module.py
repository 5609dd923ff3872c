"""The LightningDataModule shared by images and text: load once, split, subset, encode, serve tensors."""
from __future__ import annotations

from collections.abc import Sequence
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from xfer.data import read_cache, readers
from xfer.data.raw import Raw
from xfer.data.readers import Reader
from xfer.data.spec import SPLITS, DataSpec
from xfer.data.splits import balanced_subset, grouped_split, grouped_split_off, split_off, stratified_split
from xfer.errors import DataError

log = logging.getLogger(__name__)


class EpochShuffle(Sampler[int]):
    """A permutation that is a pure function of (seed, epoch): a resumed run sees the same order
    as an uninterrupted one. Lightning calls ``set_epoch`` before every training epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class TensorBatches(TensorDataset):
    """A TensorDataset the DataLoader reads a batch at a time: one gather per tensor for the batch's
    indices, instead of one item per sample followed by a stack (no per-sample Python)."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        device = self.tensors[0].device
        if device.type == "cuda":  # through page-locked memory, so the copy does not wait for the GPU's queue
            index = index.pin_memory().to(device, non_blocking=True)
        elif device.type != "cpu":
            index = index.to(device)
        return tuple(t.index_select(0, index) for t in self.tensors)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


def as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function for ``TensorBatches``: its batches come out already stacked."""
    return batch


class SplitDataModule(pl.LightningDataModule):
    """Train/val/test tensors for one classification data set.

    ``reader`` is a callable that returns the data set's ``Raw`` (a config's nested ``reader:`` node,
    which Hydra turns into a ``functools.partial`` of a reader function); without one, the reader
    named after the data set (``read_<name>``). The data module hands the reader the settings of its
    own that the reader takes (``handed_to_reader``: ``group_column``, for images ``image_size``).

    Splits come from the reader when the data set defines them, else they are stratified and fixed
    by ``split_seed``. With ``group_column`` (a column of group ids: a movie, an author) whole groups
    go to one split, so no group is in two. ``fraction`` / ``samples_per_class`` then keep a
    class-balanced, ``seed``-ed subset of the training split only. Subclasses turn raw items into
    tensors (``encode``).
    """

    modality = ""
    # settings of the data module that it passes on to its reader, when the reader takes them
    handed_to_reader: tuple[str, ...] = ("group_column",)

    def __init__(self, name: str, reader: Reader | None = None, classes: Sequence[int] | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, split_seed: int = 0,
                 fraction: float = 1.0, samples_per_class: int | None = None, batch_size: int = 64,
                 eval_batch_size: int = 512, num_workers: int = 0, seed: int = 0,
                 group_column: str | None = None, on_device: bool | str = "auto",
                 on_device_limit_mb: float = 2048, pin_memory: bool = True, read_cache_dir: str | None = None):
        super().__init__()
        if on_device not in (True, False, "auto"):
            raise DataError(f"{name}.on_device={on_device!r}; allowed: auto, true or false")
        if on_device is True and num_workers > 0:
            raise DataError(f"{name}.on_device=true with num_workers={num_workers}: worker processes cannot "
                            f"gather batches from device memory; allowed: num_workers=0, or on_device=auto|false")
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"{name}.fraction={fraction} is out of range; allowed: 0 < fraction <= 1")
        if samples_per_class is not None and samples_per_class < 1:
            raise DataError(f"{name}.samples_per_class={samples_per_class}; allowed: an integer >= 1 or null")
        self.name = name
        self.reader: Reader = readers.named(name) if reader is None else reader
        if not callable(self.reader):
            raise DataError(f"{name}.reader={self.reader!r} is not a reader; allowed: a config node with "
                            f"_target_: <a reader function> and _partial_: true")
        self.group_column = group_column
        if group_column is not None and not readers.takes(self.reader, "group_column"):
            raise DataError(f"source.group_column={group_column!r} (data set '{name}'): reader '{readers.label(self.reader)}' has no "
                            f"group ids; allowed: null, or a reader that reads columns "
                            f"({', '.join(readers.with_groups())})")
        self.classes = list(classes) if classes is not None else None
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.fraction, self.samples_per_class = fraction, samples_per_class
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.seed = seed
        self.on_device, self.on_device_limit_mb, self.pin_memory = on_device, float(on_device_limit_mb), bool(pin_memory)
        self.datasets: dict[str, Dataset] = {}
        self.placed: dict[str, TensorBatches] = {}  # split -> its tensors on the accelerator (``place``)
        self.destination: torch.device | None = None  # where the batches are trained on, once known (``place``)
        self.class_names: list[str] = []
        self.dropped: dict[str, int] = {}
        self.rendering: dict[str, Any] | None = None  # text drawn as images: what was cut, what had no glyph
        self.indices: dict[str, np.ndarray] = {}  # split -> each example's row among the reader's rows (all splits)
        self.groups: dict[str, np.ndarray] | None = None  # split -> each example's group id, when grouped
        self.group_counts: dict[str, int] | None = None  # split -> number of groups, when grouped
        self._spec: DataSpec | None = None
        self.decode = None  # the reader's file decoder, when it read lazily (``Raw.decode``)
        self.read_cache_dir = Path(read_cache_dir).expanduser() if read_cache_dir else None
        self.read_from: str | None = None  # after setup: "cache" (read_cache), else "files"
        # after setup, for modules that encode through encode_cache (text): "cache", else "computed"
        self.encoded_from: str | None = None

    # -- to be provided by subclasses ------------------------------------------------------
    def encode(self, items: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def spec_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def dataset(self, inputs: Any, labels: torch.Tensor) -> Dataset:
        """One split's data set, read a batch at a time (``__getitems__`` -> (inputs, labels))."""
        return TensorBatches(inputs, labels)

    def served(self, split: str, train: bool) -> Dataset:
        """What the loader of ``split`` reads: its data set (on the accelerator once ``place``d), as given
        to training when ``train``."""
        return self.placed[split] if split in self.placed else self.datasets[split]

    # -- where batches are gathered ---------------------------------------------------------
    def place(self, device: torch.device | str) -> bool:
        """Gather batches on ``device`` from now on, when ``on_device`` allows: every split's tensors are
        copied there once, and each batch is one index_select on the device (no copy per step, no
        per-sample Python). ``on_device=auto`` does it when the data is in memory, no loader workers are
        asked for and the splits fit in ``on_device_limit_mb``; ``true`` insists; ``false`` never does.
        A CPU device changes nothing. Returns whether batches are gathered on ``device``. ``datasets``
        itself stays on the CPU: what reads it outside the loaders (diagnostics, statistics) is unchanged."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            # "cuda" is the current GPU: named as its tensors name it, so a second call finds the copies
            device = torch.device("cuda", torch.cuda.current_device())
        self.destination = device
        if device.type == "cpu" or self.on_device is False or self.num_workers > 0:
            return False
        if self.placed and next(iter(self.placed.values())).tensors[0].device == device:
            return True
        if not self.datasets:
            self.setup()
        if not all(isinstance(d, TensorBatches) for d in self.datasets.values()):
            if self.on_device is True:
                raise DataError(f"{self.name}.on_device=true, but its images are decoded from files a batch at "
                                f"a time (reader.in_memory=false); allowed: on_device=auto|false, or "
                                f"reader.in_memory=true")
            return False
        mib = sum(d.nbytes() for d in self.datasets.values()) / 2**20
        if self.on_device == "auto" and mib > self.on_device_limit_mb:
            log.info("%s: %.0f MiB of data is over on_device_limit_mb=%g: batches are gathered on the CPU",
                     self.name, mib, self.on_device_limit_mb)
            return False
        self.placed = {s: TensorBatches(*(t.to(device) for t in d.tensors)) for s, d in self.datasets.items()}
        log.info("%s: %.0f MiB of data copied to %s once; batches are gathered there", self.name, mib, device)
        return True

    def _trainer_device(self) -> torch.device | None:
        trainer = self.trainer
        return None if trainer is None else trainer.strategy.root_device

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["placed"], state["destination"] = {}, None  # a spawned process places its own copy on its own device
        return state

    # -- shared ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        raw = self._read()
        self.dropped = dict(raw.dropped)
        self.decode = raw.decode
        split_items, split_labels = self._split(raw)
        encoded = self.encode(split_items)
        for s in SPLITS:
            self.datasets[s] = self.dataset(encoded[s], torch.as_tensor(split_labels[s]))
        self._spec = DataSpec(name=self.name, modality=self.modality, num_classes=len(self.class_names),
                              class_names=tuple(self.class_names), **self.spec_fields())

    def _read(self) -> Raw:
        """The reader's ``Raw``: from the read cache when it holds this reader's output for unchanged files."""
        handed = {k: getattr(self, k) for k in self.handed_to_reader if readers.takes(self.reader, k)}
        entry = None if self.read_cache_dir is None else read_cache.entry(self.read_cache_dir, self.name,
                                                                          self.reader, handed)
        raw = None if entry is None else read_cache.load(entry)
        self.read_from = "files" if raw is None else "cache"
        if raw is None:
            started = time.time_ns()
            raw = self.reader(**handed)
            if entry is not None:
                read_cache.store(entry, raw, read_started_ns=started)
        return raw

    def _split(self, raw: Raw) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        names = raw.class_names
        # one pool of items with a split tag, so class filtering and relabelling happen once
        tags, items, labels, groups = [], [], [], []
        for s, (x, y) in raw.splits.items():
            tags.append(np.full(len(y), s, dtype=object))
            items.append(x)
            labels.append(np.asarray(y, dtype=np.int64))
            if raw.groups is not None:
                groups.append(np.asarray(raw.groups[s], dtype=object))
        tag = np.concatenate(tags)
        label = np.concatenate(labels)
        group = self._group_ids(np.concatenate(groups)) if raw.groups is not None else None
        pool = np.concatenate(items) if isinstance(items[0], np.ndarray) else sum(items, [])
        rows = np.arange(len(label), dtype=np.int64)  # the reader's row ids, kept through class filtering
        if self.classes is not None:
            bad = [c for c in self.classes if not 0 <= c < len(names)]
            if bad:
                raise DataError(f"source.classes has {bad}, but data set '{self.name}' has {len(names)} classes; "
                                f"allowed: label indices 0..{len(names) - 1}")
            remap = np.full(len(names), -1)
            remap[self.classes] = np.arange(len(self.classes))
            keep = np.flatnonzero(remap[label] >= 0)
            tag, label = tag[keep], remap[label[keep]]
            group = None if group is None else group[keep]
            rows = rows[keep]
            pool = pool[keep] if isinstance(pool, np.ndarray) else [pool[i] for i in keep]
            names = [names[c] for c in self.classes]
        self.class_names = list(names)
        if len(names) < 2:  # nothing to classify; later code (metrics, the confusion matrix) assumes two
            found = f"only one class, {names[0]!r}" if names else "no classes"
            # target.* keys: build.datamodule names the side the data set is used on
            hint = ("target.classes keeps only one" if self.classes is not None
                    else "check target.reader.label_column and the file" if readers.takes(self.reader, "label_column")
                    else "check the file")
            raise DataError(f"data set '{self.name}' has {found}; a classification task needs at least two "
                            f"classes ({hint})")

        index: dict[str, np.ndarray] = {s: np.flatnonzero(tag == s) for s in SPLITS}
        if group is not None:
            self._check_given_splits_disjoint(group, index)
        if len(index["test"]) == 0 and len(index["val"]) == 0:
            base = index["train"]
            if group is None:
                tr, va, te = stratified_split(label[base], self.val_fraction, self.test_fraction, self.split_seed)
            else:
                tr, va, te = grouped_split(label[base], group[base], self.val_fraction, self.test_fraction,
                                           self.split_seed)
            index = {"train": base[tr], "val": base[va], "test": base[te]}
        elif len(index["val"]) == 0:
            if group is None:
                index["train"], index["val"] = split_off(label, index["train"], self.val_fraction, self.split_seed)
            else:
                index["train"], index["val"] = grouped_split_off(label, group, index["train"], self.val_fraction,
                                                                 self.split_seed)
        present = set(np.unique(label[index["train"]]).tolist())
        for s in ("val", "test"):
            missing = sorted(set(np.unique(label[index[s]]).tolist()) - present)
            if missing:
                raise DataError(f"data set '{self.name}': classes {[names[m] for m in missing]} appear in "
                                f"{s} but not in train")
        if len(present) < len(names):
            raise DataError(f"data set '{self.name}': only {len(present)} of {len(names)} classes have "
                            f"training samples")
        try:
            index["train"] = balanced_subset(label, index["train"], self.seed, self.fraction,
                                             self.samples_per_class)
        except ValueError as err:
            raise DataError(f"data set '{self.name}': {err}") from None
        for s in SPLITS:
            if len(index[s]) == 0:
                if group is not None:
                    raise DataError(f"data set '{self.name}': the {s} split is empty: group_column="
                                    f"{self.group_column!r} has only {len(np.unique(group))} groups and a split gets "
                                    f"whole groups; allowed: data with a group for each of train, val and test, or "
                                    f"group_column=null")
                raise DataError(f"data set '{self.name}': the {s} split is empty; "
                                f"raise val_fraction/test_fraction or supply more data")
        self.indices = {s: rows[index[s]] for s in SPLITS}
        if group is not None:
            self.groups = {s: group[index[s]] for s in SPLITS}
            self.group_counts = {s: int(len(np.unique(self.groups[s]))) for s in SPLITS}
        take = (lambda ix: pool[ix]) if isinstance(pool, np.ndarray) else (lambda ix: [pool[i] for i in ix])
        return {s: take(index[s]) for s in SPLITS}, {s: label[index[s]] for s in SPLITS}

    @staticmethod
    def _group_ids(group: np.ndarray) -> np.ndarray:
        """An item without a group ("") becomes a group of its own."""
        out = group.astype(str).astype(object)
        lone = np.flatnonzero(out == "")
        out[lone] = [f"\0item{i}" for i in lone]
        return out

    def _check_given_splits_disjoint(self, group: np.ndarray, index: dict[str, np.ndarray]) -> None:
        """Splits the files define must not share a group either: that is the leak grouping prevents."""
        seen: dict[str, set] = {s: set(group[index[s]].tolist()) for s in SPLITS}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = seen[a] & seen[b]
            if shared:
                example = sorted(shared)[0]
                raise DataError(f"data set '{self.name}': {len(shared)} groups of group_column="
                                f"{self.group_column!r} are in both the {a} and the {b} file (e.g. {example!r}); "
                                f"allowed: files with disjoint groups, or group_column=null")

    def fingerprint(self, split: str = "test") -> str:
        """A short hash of which examples form ``split`` (the data set, its reader and the reader's arguments,
        among them the file, the classes kept and the rows): runs with equal fingerprints are scored on the
        same examples, so they can be paired."""
        h = hashlib.sha256(repr((self.name, readers.identity(self.reader), self.classes)).encode())
        h.update(self.indices[split].tobytes())
        return h.hexdigest()[:16]

    @property
    def spec(self) -> DataSpec:
        if self._spec is None:
            self.setup()
        assert self._spec is not None
        return self._spec

    def sizes(self) -> dict[str, int]:
        return {s: len(d) for s, d in self.datasets.items()}

    def inputs(self, split: str, batch_size: int, limit: int | None = None):
        """The inputs of ``split`` in order, ``batch_size`` at a time (the first ``limit`` only), never
        augmented: for passes outside training (BatchNorm statistics, feature banks)."""
        data = self.datasets[split]
        n = len(data) if limit is None else min(limit, len(data))
        if isinstance(data, TensorBatches):
            yield from data.tensors[0][:n].split(batch_size)
            return
        loader = DataLoader(data, batch_size=batch_size, sampler=range(n), collate_fn=as_batch,
                            num_workers=self.num_workers)
        for batch in loader:
            yield batch[0]

    def _loader(self, split: str, train: bool) -> DataLoader:
        if (trainer_device := self._trainer_device()) is not None:
            self.place(trainer_device)
        device = self.destination
        data = self.served(split, train)
        return DataLoader(
            data,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochShuffle(len(data), self.seed) if train else None,
            collate_fn=as_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # batches that cross from the CPU to a GPU go through page-locked memory
            pin_memory=(self.pin_memory and split not in self.placed and device is not None
                        and device.type == "cuda"),
            # its own generator: creating an iterator never draws from the global RNG, which the
            # per-epoch reseed (callbacks.EpochSeed) owns, so resumed and uninterrupted runs agree
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
