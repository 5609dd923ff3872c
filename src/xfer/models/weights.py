"""Where an ecosystem trunk's weights come from: a torchvision weights name, a local file, or none.

``trunk.weights`` is one of

* null: random initialisation (the trunk is seeded like every other trunk);
* a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``, or the full ``ResNet18_Weights.IMAGENET1K_V1``),
  resolved with ``torchvision.models.get_model_weights``; its file is read from torch's hub cache
  (``torch.hub.get_dir()/checkpoints``) and downloaded there only when it is missing and ``trunk.download``
  is true. Offline, a missing file fails at once with one line naming the folder and how to pass a file;
* a local file: a state dict in ``.pth``/``.pt``/``.bin`` (read with ``torch.load(weights_only=True)``:
  tensors only, never code) or ``.safetensors``.

Every file that is read has its sha256 recorded (``Weights.sha256``), which goes into results.json and the
trunk cache key, so a changed file never reuses a cached trunk.
"""
from __future__ import annotations

import difflib
import hashlib
import os
import pickle
import urllib.error
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xfer.errors import CheckpointError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
PASS_A_FILE = "trunk.weights=/path/to/file.pth"


@dataclass(frozen=True)
class Weights:
    """What ``trunk.weights`` resolved to."""

    kind: str                     # "random", "name" (torchvision/timm weights name), "file"
    spec: str | None              # what the user gave
    name: str | None = None       # the full weights name (ResNet18_Weights.IMAGENET1K_V1)
    path: str | None = None       # the file read (for a name: the file in the hub cache)
    sha256: str | None = None
    enum: Any = None              # the torchvision WeightsEnum member, for a name


def is_file_spec(spec: str) -> bool:
    """A weights value that names a file (a path, or something ending in a weights file's suffix)."""
    return (os.sep in spec or "/" in spec or spec.lower().endswith(FILE_SUFFIXES)
            or spec.startswith((".", "~")) or Path(spec).expanduser().is_file())


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """The file's sha256 (memoised on path, size and mtime: a run builds its trunk more than once)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or ``torch.save`` file, never running code from it. A file that
    wraps its state dict (``{"state_dict": ...}`` or ``{"model": ...}``) is unwrapped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"trunk.weights={path}: no such file; allowed: a state dict file "
                              f"({', '.join(FILE_SUFFIXES)}), a weights name, or null")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(p), device="cpu")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"trunk.weights={path} is not a safe weights file: loading it would run code "
                              f"({str(err).strip().splitlines()[0][:120]}); refusing to load it") from None
    except Exception as err:  # noqa: BLE001 - torch and safetensors raise many types for a damaged file
        text = str(err).strip().splitlines()
        raise CheckpointError(f"trunk.weights={path} is not a readable weights file ({type(err).__name__}"
                              f"{': ' + text[0][:160] if text else ''})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping) and len(state) <= 8:
            state = state[wrapper]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"trunk.weights={path} holds no state dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):  # saved from a DataParallel/DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def close_matches(word: str, options: list[str], n: int = 3) -> str:
    near = difflib.get_close_matches(word, options, n=n, cutoff=0.5)
    return f" (did you mean {', '.join(near)}?)" if near else ""


# -- torchvision weights names ---------------------------------------------------------------------
def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _download(url: str, dst: Path) -> None:
    """Fetch ``url`` into the hub cache, checked against the sha256 prefix in its name (what torchvision does);
    a test patches this."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    prefix = torch.hub.HASH_REGEX.search(dst.name)
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=prefix.group(1) if prefix else None, progress=False)


def torchvision_enum(arch: str, spec: str) -> Any:
    """The torchvision weights member that ``spec`` names for ``arch``, or a one-line ConfigError."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    names = [w.name for w in enum]
    short = spec.split(".", 1)[1] if spec.startswith(enum.__name__ + ".") else spec
    if short == "DEFAULT":
        return enum.DEFAULT
    if short in names:
        return enum[short]
    raise ConfigError(f"trunk.weights={spec} is not a weights name of {arch}{close_matches(short, names)}; "
                      f"allowed: DEFAULT, {', '.join(names)}, a file ({PASS_A_FILE}) or null")


def resolve_torchvision(arch: str, spec: str | None, download: bool = True) -> Weights:
    """``trunk.weights`` for the torchvision ``arch``: the file it names, found (or fetched) and hashed."""
    if spec is None:
        return Weights("random", None)
    spec = str(spec)
    if is_file_spec(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise CheckpointError(f"trunk.weights={spec}: no such file; allowed: a state dict file "
                                  f"({', '.join(FILE_SUFFIXES)}), a weights name of {arch}, or null")
        return Weights("file", spec, path=str(path.resolve()), sha256=sha256_of(path))
    member = torchvision_enum(arch, spec)
    full = f"{type(member).__name__}.{member.name}"
    cached = hub_checkpoints_dir() / os.path.basename(member.url)
    if not cached.is_file():
        where = f"the hub cache {cached.parent}"
        if not download:
            raise ConfigError(f"trunk.weights={spec}: {cached.name} ({full}) is not in {where} and trunk.download="
                              f"false; put the file there, or pass a file instead: {PASS_A_FILE}")
        try:
            _download(member.url, cached)
        except (urllib.error.URLError, OSError, RuntimeError) as err:  # RuntimeError: a hash that does not match
            reason = getattr(err, "reason", None) or err
            raise ConfigError(f"trunk.weights={spec}: {cached.name} ({full}) is not in {where} and could not be "
                              f"downloaded ({type(err).__name__}: {str(reason).strip()[:100]}); put the file "
                              f"there, or pass a file instead: {PASS_A_FILE}") from None
    return Weights("name", spec, name=full, path=str(cached), sha256=sha256_of(cached), enum=member)


def preprocessing_of(member: Any, size: tuple[int, int] | None) -> dict[str, Any]:
    """What a pretrained image adapter must do to images for these weights: mean, std, input size, channels.
    ``member``: a torchvision weights member (its ``transforms()``), or None (random weights or a file:
    ImageNet statistics, no resize). ``size`` (``trunk.input_size``, or a ViT's image size) wins."""
    mean, std, out_size = IMAGENET_MEAN, IMAGENET_STD, None
    if member is not None:
        tf = member.transforms()
        mean, std = tuple(float(v) for v in tf.mean), tuple(float(v) for v in tf.std)
        crop = list(tf.crop_size)
        out_size = (int(crop[0]), int(crop[-1]))
    if size is not None:
        out_size = (int(size[0]), int(size[-1]))
    return {"mean": tuple(mean), "std": tuple(std), "size": out_size, "channels": 3}
