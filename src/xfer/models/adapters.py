"""Task-specific input adapters: they turn a batch of one modality into the trunk's input map.

An adapter knows its modality and the trunk's input width (``out_channels``), nothing else.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from xfer.data.spec import DataSpec
from xfer.errors import ConfigError


def _require(spec: DataSpec, modality: str, adapter: str) -> None:
    if spec.modality != modality:
        allowed = "image or pretrained_image" if spec.modality == "image" else "text_fold, text_grid or text_seq"
        raise ConfigError(
            f"adapter '{adapter}' takes {modality} data, but data set '{spec.name}' is {spec.modality}; "
            f"choose an adapter for {spec.modality}: adapter@source_adapter= or adapter@target_adapter= {allowed}"
        )


EMBEDDING_BYTES = 16  # per float32 weight of an embedding that trains: itself, its gradient, AdamW's two moments


def _check_embedding(spec: DataSpec, dim: int, setting: str, adapter: str) -> None:
    """vocab x width of the embedding, checked before it is allocated (``embed_dim=10**7`` is a line, not
    the out-of-memory killer)."""
    from xfer.machine import check_memory

    check_memory(f"{setting}={dim} (adapter '{adapter}', a vocabulary of {spec.vocab_size:,} words in "
                 f"'{spec.name}')", EMBEDDING_BYTES * spec.vocab_size * dim,
                 f"an embedding of {spec.vocab_size:,} x {dim:,} float32 weights that train (with their gradient "
                 f"and the optimizer's two moments)",
                 lambda budget: f"{setting} <= {int(budget // (EMBEDDING_BYTES * spec.vocab_size)):,} for this "
                                f"vocabulary, or a smaller vocab_size")


class ImageAdapter(nn.Module):
    """uint8 images [B, C, H, W] -> normalised -> conv3x3 stem to the trunk's channels."""

    def __init__(self, spec: DataSpec, out_channels: int):
        super().__init__()
        _require(spec, "image", "image")
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(spec.channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem((x.float() - self.mean) / self.std)


class TextGridAdapter(nn.Module):
    """Token ids [B, L] -> embeddings laid out as a one-channel [L x D] image -> conv3x3 stem.

    Rows are token positions and columns are embedding dimensions, so the trunk's 3x3 kernels see
    three neighbouring tokens at a time.
    """

    def __init__(self, spec: DataSpec, out_channels: int, embed_dim: int = 32, dropout: float = 0.0):
        super().__init__()
        _require(spec, "text", "text_grid")
        _check_embedding(spec, embed_dim, "embed_dim", "text_grid")
        self.embedding = nn.Embedding(spec.vocab_size, embed_dim, padding_idx=spec.pad_id)
        self.dropout = nn.Dropout(dropout)
        self.stem = nn.Sequential(
            nn.Conv2d(1, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.stem(self.dropout(self.embedding(tokens)).unsqueeze(1))


class TextFoldAdapter(nn.Module):
    """Token ids [B, L] -> embeddings as channels, positions folded row-major into an [H x W] grid.

    ``width`` tokens make one row of the grid; the embedding dimensions become channels, projected by
    a 1x1 conv to the trunk's width.
    """

    def __init__(self, spec: DataSpec, out_channels: int, embed_dim: int = 64, width: int = 8,
                 dropout: float = 0.0):
        super().__init__()
        _require(spec, "text", "text_fold")
        _check_embedding(spec, embed_dim, "embed_dim", "text_fold")
        self.width = width
        self.rows = math.ceil(spec.seq_len / width)
        self.pad_tokens = self.rows * width - spec.seq_len
        self.pad_id = spec.pad_id
        self.embedding = nn.Embedding(spec.vocab_size, embed_dim, padding_idx=spec.pad_id)
        self.dropout = nn.Dropout(dropout)
        self.stem = nn.Sequential(
            nn.Conv2d(embed_dim, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pad_tokens:
            tokens = nn.functional.pad(tokens, (0, self.pad_tokens), value=self.pad_id)
        emb = self.dropout(self.embedding(tokens))  # [B, L, D]
        # The 1x1 conv is a matmul over the embedding dims. Done on [B, L, D] directly, its output
        # [B, L, C] is already the [B, C, rows, width] grid in channels-last layout, which the trunk's
        # convolutions run faster on; no transpose copy is made.
        conv, norm, act = self.stem
        mixed = nn.functional.linear(emb, conv.weight.view(conv.out_channels, -1))
        grid = mixed.view(emb.shape[0], self.rows, self.width, -1).permute(0, 3, 1, 2)
        return act(norm(grid))


class TextSequenceAdapter(nn.Module):
    """Token ids [B, L] -> embeddings [B, D, L] for 1-D trunks (the text-CNN baseline)."""

    def __init__(self, spec: DataSpec, out_channels: int, dropout: float = 0.0):
        super().__init__()
        _require(spec, "text", "text_seq")
        _check_embedding(spec, out_channels, "trunk.in_channels", "text_seq")  # it embeds into the trunk's width
        self.embedding = nn.Embedding(spec.vocab_size, out_channels, padding_idx=spec.pad_id)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embedding(tokens)).transpose(1, 2)


class PretrainedImageAdapter(nn.Module):
    """For a trunk with its own stem (``trunk=torchvision``, ``trunk=timm``): no random stem, only what the
    trunk's weights expect of an image. uint8 [B, C, H, W] -> float in [0, 1] -> a 1-channel image repeated
    to the trunk's channels -> resized to the weights' input size (bilinear; none when ``size`` is None) ->
    normalised with the weights' mean and std. ``preprocessing`` is the trunk's (``trunk.preprocessing``):
    ``{"mean", "std", "size", "channels"}``.

    ``affine``: a learnable per-channel scale and shift after the normalisation, starting at the identity (so
    the first step sees exactly the weights' preprocessing): 6 parameters, which give the strategies that
    train the adapter alone (``align_refine``'s alignment phase) something to train. ``affine=false``: no
    parameters at all (then ``align_refine`` cannot run)."""

    def __init__(self, spec: DataSpec, out_channels: int, preprocessing: dict | None = None, affine: bool = True):
        super().__init__()
        _require(spec, "image", "pretrained_image")
        if preprocessing is None:
            raise ValueError("adapter 'pretrained_image' is for a trunk with its own stem and preprocessing "
                             "(trunk=torchvision or trunk=timm); with this trunk use adapter 'image'")
        channels = int(preprocessing.get("channels", out_channels))
        if spec.channels not in (1, channels):
            raise ValueError(f"adapter 'pretrained_image': data set '{spec.name}' has {spec.channels} channels, "
                             f"the trunk takes {channels} (1-channel images are repeated; others are not "
                             f"converted); use adapter 'image' (its stem maps any channel count)")
        self.channels = channels
        size = preprocessing.get("size")
        self.size = None if size is None else (int(size[0]), int(size[-1]))
        mean = torch.tensor([float(v) for v in preprocessing["mean"]]).view(1, -1, 1, 1)
        std = torch.tensor([float(v) for v in preprocessing["std"]]).view(1, -1, 1, 1)
        # x/255 then (x - mean)/std, as one affine map of the uint8 values
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)
        self.gain = nn.Parameter(torch.ones(1, channels, 1, 1)) if affine else None
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:  # checked at construction: a 1-channel image
            x = x.expand(-1, self.channels, -1, -1)
        x = x.float() * self.scale + self.shift
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                                          antialias=x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1])
        if self.gain is not None:
            x = x * self.gain + self.bias
        return x
