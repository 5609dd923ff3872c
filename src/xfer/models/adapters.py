"""Task-specific input adapters: they turn a batch of one modality into the trunk's input map.

An adapter knows its modality and the trunk's input width (``out_channels``), nothing else.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from xfer.data.spec import DataSpec


def _require(spec: DataSpec, modality: str, adapter: str) -> None:
    if spec.modality != modality:
        raise ValueError(
            f"adapter '{adapter}' takes {modality} data, but data set '{spec.name}' is {spec.modality}; "
            f"choose an adapter for {spec.modality}"
        )


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
        self.embedding = nn.Embedding(spec.vocab_size, out_channels, padding_idx=spec.pad_id)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embedding(tokens)).transpose(1, 2)
