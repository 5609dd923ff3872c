"""Trunks from the ecosystem: torchvision (``trunk=torchvision``) and timm (``trunk=timm``, optional extra).

Each keeps xfer's trunk contract (see ``models/trunks.py``): ``blocks`` (an ``nn.ModuleList`` from input
to output, which every strategy addresses), ``in_channels`` (3), ``out_features`` (the model's pooled
feature width) and ``forward(x) -> [B, out_features]``: the classifier is dropped. They also carry
``preprocessing`` (mean, std, input size and channels of their weights, for the ``pretrained_image``
adapter), ``weights_sha256`` and ``describe()`` (results.json's ``trunk`` entry).

Block maps (every parameter of the model, less its classifier, lies in exactly one block):

* ResNet (resnet*, wide_resnet*, resnext*): the stem (conv1, bn1, relu, maxpool), then layer1..layer4.
* ConvNeXt: the stem (``features[0]``), stage 1, then each downsampling layer with the stage it feeds
  (``features[2:4]``, ``[4:6]``, ``[6:8]``); the last block ends with the pooled LayerNorm that torchvision
  keeps in ``classifier[0]``.
* EfficientNet, MobileNetV3: each entry of ``features`` (stem conv, the stages, the last 1x1 conv).
* ViT: the patch embedding (``conv_proj``, class token, position embedding), then each encoder layer;
  the encoder's final LayerNorm belongs to the last block. Features are the class token's.
* timm: ``model.group_matcher(coarse=True)``'s groups (timm's own stem / stage map, what its layer-wise lr
  decay uses); parameters it leaves unmatched (a final norm) join the last group.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xfer.checkpoints import state_mismatch
from xfer.errors import CheckpointError, ConfigError
from xfer.models import weights as W

# torchvision architectures with a block map, by family. Others of the same builders work the same way.
TORCHVISION_ARCHS: dict[str, str] = {
    **{a: "resnet" for a in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                             "resnext50_32x4d")},
    **{a: "convnext" for a in ("convnext_tiny", "convnext_small", "convnext_base")},
    **{a: "features" for a in ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
                               "efficientnet_v2_s", "mobilenet_v3_small", "mobilenet_v3_large")},
    **{a: "vit" for a in ("vit_b_16", "vit_b_32", "vit_l_16")},
}


def _unknown_arch(arch: str, supported: Sequence[str], library: str) -> ConfigError:
    return ConfigError(f"trunk.arch={arch} is not a supported {library} trunk{W.close_matches(arch, list(supported))}; "
                       f"allowed: {', '.join(supported)}")


class PatchEmbedding(nn.Module):
    """A torchvision ViT's input side: patches (``conv_proj``), the class token, the position embedding."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout
        self.image_size, self.patch_size, self.hidden_dim = vit.image_size, vit.patch_size, vit.hidden_dim

    def reset_parameters(self) -> None:  # what torchvision initialises them to (strategy.reinit_rest)
        nn.init.zeros_(self.class_token)
        nn.init.normal_(self.pos_embedding, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} images, got {h}x{w}: use "
                             f"adapter pretrained_image (it resizes), or set trunk.image_size")
        x = self.conv_proj(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class PoolThenNorm(nn.Module):
    """ConvNeXt's last stage, global average pooling, then its LayerNorm (torchvision's ``classifier[0]``)."""

    def __init__(self, stage: nn.Module, norm: nn.Module):
        super().__init__()
        self.stage, self.norm = stage, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stage(x).mean(dim=(2, 3), keepdim=True))


def torchvision_blocks(model: nn.Module, family: str) -> tuple[list[nn.Module], int, list[str]]:
    """The block map of a torchvision classifier: its blocks, the feature width, the classifier's names."""
    if family == "resnet":
        stem = nn.Sequential(OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool))
        return [stem, model.layer1, model.layer2, model.layer3, model.layer4], model.fc.in_features, ["fc"]
    if family == "convnext":
        f = model.features
        blocks = [f[0], f[1], nn.Sequential(f[2], f[3]), nn.Sequential(f[4], f[5]),
                  PoolThenNorm(nn.Sequential(f[6], f[7]), model.classifier[0])]
        return blocks, model.classifier[2].in_features, ["classifier.2"]
    if family == "features":
        linear = next(m for m in model.classifier.modules() if isinstance(m, nn.Linear))
        return list(model.features), linear.in_features, ["classifier"]
    if family == "vit":
        layers = list(model.encoder.layers)
        blocks = [PatchEmbedding(model), *layers[:-1], nn.Sequential(layers[-1], model.encoder.ln)]
        return blocks, model.hidden_dim, ["heads"]
    raise AssertionError(family)


def _is_head(key: str, head: Sequence[str]) -> bool:
    return any(key == h or key.startswith(h + ".") for h in head)


def _key_map(trunk: nn.Module, model: nn.Module) -> dict[str, str]:
    """The trunk's state keys -> the model's (the names in a torchvision weights file), by tensor identity."""
    by_id = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
    return {k: by_id[id(t)] for k, t in trunk.state_dict(keep_vars=True).items() if id(t) in by_id}


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], head: Sequence[str], what: str,
                      source: str) -> None:
    """Load ``state`` (a whole classifier's weights, or the same without its classifier) into ``model``,
    classifier keys left out; or a one-line CheckpointError naming the first key that does not fit."""
    expected = {k: v for k, v in model.state_dict().items() if not _is_head(k, head)}
    got = {k: v for k, v in state.items() if not _is_head(k, head)}
    mismatch = state_mismatch(expected, got, here=what, there="the weights file")
    if mismatch:
        raise CheckpointError(f"trunk.weights={source} does not fit {what}: {mismatch}")
    model.load_state_dict(got, strict=False)


class EcosystemTrunk(nn.Module):
    """What both ecosystem trunks share: the contract's attributes and the record of their weights."""

    library = "?"
    arch: str
    weights: W.Weights
    preprocessing: dict[str, Any]

    preprocessing_from: str | None = None  # the weights whose preprocessing a randomised trunk kept

    @property
    def weights_sha256(self) -> str | None:
        return self.weights.sha256

    def take_random_weights(self, random: EcosystemTrunk) -> None:
        """Hold ``random``'s weights (the same trunk built with ``weights: null``) instead of the pretrained
        ones, keeping this trunk's preprocessing: a random control on the same inputs."""
        if type(random) is not type(self) or random.weights.kind != "random":
            raise TypeError(f"take_random_weights: {type(random).__name__} with {random.weights.kind} weights")
        self.load_state_dict(random.state_dict())
        self.preprocessing_from = self.weights.spec
        self.weights = random.weights

    def describe(self) -> dict[str, Any]:
        """results.json's ``trunk`` entry."""
        return {"library": self.library, "arch": self.arch, "weights": self.weights.spec,
                "weights_name": self.weights.name, "weights_file": self.weights.path, "sha256": self.weights.sha256,
                **({"random_init": True, "preprocessing_from": self.preprocessing_from}
                   if self.preprocessing_from is not None else {})}


def describe_trunk(trunk: nn.Module) -> dict[str, Any]:
    """results.json's ``trunk`` entry for any trunk: the architecture and where its initial weights came from
    (a weights name or file, and the file's sha256); xfer's own trunks start random (weights, sha256 null)."""
    if isinstance(trunk, EcosystemTrunk):
        return trunk.describe()
    return {"library": "xfer", "arch": type(trunk).__name__, "weights": None, "sha256": None}


def _size_arg(value: Any, key: str) -> tuple[int, int] | None:
    if value is None:
        return None
    vals = [value] if isinstance(value, int) else list(value)
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals):
        raise ConfigError(f"{key}={value}: must be [height, width] (integers >= 1) or null")
    return int(vals[0]), int(vals[1])


class TorchvisionTrunk(EcosystemTrunk):
    """A torchvision classifier as a trunk: ``trunk=torchvision trunk.arch=resnet50 trunk.weights=DEFAULT``.

    ``weights``: a torchvision weights name, a local state dict file, or null (random); ``download``: false
    never fetches a missing named file (it fails at once instead); ``image_size``: a ViT's input size (random
    weights or a file made for it); ``input_size``: [H, W] the ``pretrained_image`` adapter resizes to
    (default: the weights' crop size; random weights and files: no resize)."""

    library = "torchvision"

    def __init__(self, arch: str = "resnet18", weights: str | None = None, download: bool = True,
                 image_size: int | None = None, input_size: Sequence[int] | None = None):
        super().__init__()
        from torchvision.models import get_model

        if arch not in TORCHVISION_ARCHS:
            raise _unknown_arch(arch, list(TORCHVISION_ARCHS), "torchvision")
        family = TORCHVISION_ARCHS[arch]
        if image_size is not None and family != "vit":
            raise ConfigError(f"trunk.image_size={image_size}: only a ViT has a fixed image size; "
                              f"leave it null for {arch} (trunk.input_size sets the adapter's resize)")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ConfigError(f"trunk.image_size={image_size}: must be an integer >= 1 or null")
        size = _size_arg(input_size, "trunk.input_size")
        self.arch, self.family = arch, family
        self.weights = W.resolve_torchvision(arch, weights, download)
        kwargs: dict[str, Any] = {}
        if family == "vit":
            if self.weights.enum is not None:
                wanted = int(self.weights.enum.meta["min_size"][0])
                if image_size is not None and image_size != wanted:
                    raise ConfigError(f"trunk.image_size={image_size}: {self.weights.name} is made for {wanted}; "
                                      f"leave trunk.image_size null")
                image_size = wanted
            if image_size is not None:
                kwargs["image_size"] = image_size
        model = get_model(arch, weights=None, **kwargs)
        blocks, self.out_features, head = torchvision_blocks(model, family)
        if self.weights.path is not None:
            load_weights_into(model, W.read_state_dict(self.weights.path), head, f"torchvision {arch}",
                              str(weights))
        self.blocks = nn.ModuleList(blocks)
        self.in_channels = 3
        if family == "vit":
            vit_size = int(model.image_size)
            size = size or (vit_size, vit_size)
        self.preprocessing = W.preprocessing_of(self.weights.enum, size)
        # the trunk's state keys -> the names in a torchvision weights file (for export and tests)
        self.model_keys = _key_map(self, model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if x.dim() == 4:
            return x.mean(dim=(2, 3))
        return x[:, 0]  # ViT: the class token


# -- timm --------------------------------------------------------------------------------------------
def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError("trunk=timm needs the package timm, which is not installed; install it with: "
                          "pip install 'timm>=1.0' (or pip install -e '.[timm]')") from None
    return timm


def _matched(name: str, matcher: Any) -> bool:
    specs = []
    for spec in matcher.values():
        if spec is None:
            continue
        specs += [s[0] for s in spec] if isinstance(spec, (list, tuple)) else [spec]
    return any(re.match(s, name) for s in specs)


class ParamGroup(nn.Module):
    """One block of a timm trunk: the submodules and loose parameters timm's group matcher put together.
    It holds references into the model (the trunk's forward runs the model itself)."""

    def __init__(self, modules: list[tuple[str, nn.Module]], params: list[tuple[str, nn.Parameter]]):
        super().__init__()
        self.parts = nn.ModuleDict({n.replace(".", "__"): m for n, m in modules})
        for n, p in params:
            self.register_parameter(n.replace(".", "__"), p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        raise RuntimeError("a timm trunk's blocks hold its parameters; the trunk runs the model")


def timm_groups(model: nn.Module) -> list[ParamGroup]:
    """Blocks for a timm model from ``model.group_matcher(coarse=True)``; every parameter and buffer once."""
    from timm.models import group_parameters

    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):
        matcher = None
    if matcher is None:  # no matcher: one block per top-level child with parameters
        groups = {}
        for i, (name, child) in enumerate(model.named_children()):
            for p, _ in child.named_parameters():
                groups.setdefault(i, []).append(f"{name}.{p}")
        groups = dict(enumerate(groups.values()))
    else:
        groups = dict(group_parameters(model, matcher))
        ids = sorted(groups)
        if isinstance(matcher, dict) and len(ids) > 1 and not any(_matched(n, matcher) for n in groups[ids[-1]]):
            groups[ids[-2]] += groups.pop(ids[-1])  # the unmatched rest (a final norm) joins the last group
    group_of = {n: g for g, names in groups.items() for n in names}
    order = sorted(groups)
    chosen: dict[int, tuple[list, list]] = {g: ([], []) for g in order}

    def assign(prefix: str, module: nn.Module) -> None:
        names = [f"{prefix}{n}" for n, _ in module.named_parameters()]
        owners = {group_of[n] for n in names}
        if len(owners) == 1 and prefix:
            chosen[owners.pop()][0].append((prefix[:-1], module))
            return
        for n, p in module.named_parameters(recurse=False):
            chosen[group_of[prefix + n]][1].append((prefix + n, p))
        for n, child in module.named_children():
            if any(True for _ in child.parameters()):
                assign(f"{prefix}{n}.", child)
            elif any(True for _ in child.buffers()):  # a parameter-free module with state: the last block
                chosen[order[-1]][0].append((prefix + n, child))
    assign("", model)
    return [ParamGroup(*chosen[g]) for g in order if chosen[g][0] or chosen[g][1]]


class TimmTrunk(EcosystemTrunk):
    """A timm model as a trunk: ``trunk=timm trunk.arch=resnet18 trunk.weights=<tag | file | null>``.

    ``weights``: null (random), ``pretrained`` (timm's default tag), a pretrained tag of ``arch``
    (``a1_in1k``), or a local file (loaded by timm's own offline path, ``pretrained_cfg_overlay=dict(file=)``);
    ``model_args``: more keyword arguments of ``timm.create_model`` (``img_size: 32`` for a small ViT)."""

    library = "timm"

    def __init__(self, arch: str = "resnet18", weights: str | None = None, download: bool = True,
                 input_size: Sequence[int] | None = None, model_args: dict[str, Any] | None = None):
        super().__init__()
        timm = _timm()
        base = arch.split(".", 1)[0]
        if not timm.is_model(base):
            raise _unknown_arch(arch, [m for m in timm.list_models() if m.startswith(base[:3])][:40] or
                                ["see timm.list_models()"], "timm")
        size = _size_arg(input_size, "trunk.input_size")
        args = {**(model_args or {}), "num_classes": 0}
        self.arch = arch
        if weights is None:
            self.weights = W.Weights("random", None)
            model = timm.create_model(arch, pretrained=False, **args)
        elif W.is_file_spec(str(weights)):
            path = os.path.expanduser(str(weights))
            state = W.read_state_dict(path)  # refuses a file that is unsafe or unreadable before timm touches it
            self.weights = W.Weights("file", str(weights), path=os.path.abspath(path), sha256=W.sha256_of(path))
            mismatch: str | None = None
            try:
                model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=path), **args)
            except RuntimeError as err:  # a shape that does not fit
                model, mismatch = None, str(err).strip().splitlines()[0][:160]
            # timm loads non-strictly once the classifier is dropped (num_classes=0): check every key here
            reference = model if model is not None else timm.create_model(arch, pretrained=False, **args)
            head = reference.pretrained_cfg.get("classifier") or ()
            head = (head,) if isinstance(head, str) else tuple(head)
            got = {k: v for k, v in state.items() if not any(k.startswith(h + ".") for h in head)}
            mismatch = state_mismatch(reference.state_dict(), got, here=f"timm {arch}",
                                      there="the weights file") or mismatch
            if mismatch:
                raise CheckpointError(f"trunk.weights={weights} does not fit timm {arch}: {mismatch}")
        else:
            model, self.weights = self._named(timm, arch, base, str(weights), download, args)
        self.__dict__["_model"] = model  # not a submodule: its parameters live in the blocks
        self.blocks = nn.ModuleList(timm_groups(model))
        self.in_channels = int(getattr(model, "in_chans", 3) or 3)
        self.out_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
        mean, std, out_size = W.IMAGENET_MEAN, W.IMAGENET_STD, size
        if self.weights.kind == "name":
            cfg = timm.data.resolve_model_data_config(model)
            mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
            out_size = size or tuple(int(v) for v in cfg["input_size"][1:])
        elif out_size is None and getattr(getattr(model, "patch_embed", None), "strict_img_size", False):
            out_size = tuple(int(v) for v in model.patch_embed.img_size)
        self.preprocessing = {"mean": tuple(mean), "std": tuple(std), "size": out_size, "channels": self.in_channels}

    @staticmethod
    def _named(timm: Any, arch: str, base: str, tag: str, download: bool, args: dict[str, Any]
               ) -> tuple[nn.Module, W.Weights]:
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(base + ".*") if "." in n]
        if tag in ("pretrained", "DEFAULT"):
            name = arch
        elif tag in tags:
            name = f"{base}.{tag}"
        else:
            raise ConfigError(f"trunk.weights={tag} is not a pretrained tag of timm {base}{W.close_matches(tag, tags)}; "
                              f"allowed: pretrained, {', '.join(tags) or '(none)'}, a file ({W.PASS_A_FILE}) or null")
        cached = _timm_cached_file(timm, name)
        if cached is None and not download:
            raise ConfigError(f"trunk.weights={tag}: timm {name}'s weights are not in the Hugging Face cache "
                              f"and trunk.download=false; pass a file instead: {W.PASS_A_FILE}")
        try:
            model = timm.create_model(name, pretrained=True, **args)
        except Exception as err:  # noqa: BLE001 - offline, huggingface_hub and urllib raise many types
            raise ConfigError(f"trunk.weights={tag}: timm {name}'s weights are not cached and could not be "
                              f"downloaded ({type(err).__name__}); pass a file instead: {W.PASS_A_FILE}") from None
        cached = _timm_cached_file(timm, name)
        return model, W.Weights("name", tag, name=name, path=cached, sha256=None if cached is None else W.sha256_of(cached))

    def train(self, mode: bool = True) -> "TimmTrunk":
        super().train(mode)
        self._model.train(mode)  # also its parameter-free modules outside the blocks (dropouts)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._model(x)  # num_classes=0: the pooled features


def _timm_cached_file(timm: Any, name: str) -> str | None:
    """The Hugging Face cache file of a timm pretrained name, or None when it is not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None)
        if not repo:
            return None
        for filename in ("model.safetensors", "pytorch_model.bin", getattr(cfg, "hf_hub_filename", None)):
            if filename:
                found = try_to_load_from_cache(repo.split("@")[0], filename)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    except Exception:  # noqa: BLE001 - no cache to look in
        return None
    return None
