"""Shared trunks. A trunk maps a [B, C, H, W] (or [B, C, L]) feature map to [B, out_features].

Every trunk exposes ``blocks``: an ``nn.ModuleList`` ordered from input to output. Strategies
address the trunk only through that list, so every strategy works with every trunk.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn

from xfer.models.fastconv import conv2d


class ConvBlock(nn.Module):
    """conv3x3 -> BatchNorm -> ReLU -> 2x2 max-pool (ceil mode, so small inputs never vanish)."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(conv2d(self.conv, x))))


Pool = Literal["avg", "max"]  # global pooling after the last block; the config schema reads this list
POOLS: tuple[str, ...] = get_args(Pool)


def global_pool(x: torch.Tensor, pool: Pool) -> torch.Tensor:
    return x.amax(dim=(2, 3)) if pool == "max" else x.mean(dim=(2, 3))


def _check(channels: Sequence[int], pool: Pool) -> None:
    if not channels or any(c < 1 for c in channels):
        raise ValueError(f"trunk.channels={list(channels)}; allowed: a non-empty list of positive widths")
    if pool not in POOLS:
        raise ValueError(f"trunk.pool={pool!r}; allowed: {', '.join(POOLS)}")


class CNNTrunk(nn.Module):
    """A plain VGG-style CNN: one ``ConvBlock`` per entry of ``channels``, then global pooling.

    Global pooling makes the trunk indifferent to the input's height and width, so a 28x28 digit and
    a 6x8 token grid both fit. Subclasses change the block type (and may change the defaults).
    """

    block: type[nn.Module] = ConvBlock

    def __init__(self, in_channels: int = 32, channels: Sequence[int] = (32, 64, 128, 128), pool: Pool = "avg"):
        super().__init__()
        _check(channels, pool)
        widths = [in_channels, *channels]
        self.in_channels, self.pool = in_channels, pool
        self.blocks = nn.ModuleList(self.block(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return global_pool(x, self.pool)


class ResidualBlock(nn.Module):
    """Two conv3x3-BN layers with an identity (or 1x1-projected) shortcut, then ReLU and 2x2 pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(conv2d(self.conv1, x)))
        y = self.norm2(conv2d(self.conv2, y))
        shortcut = x
        if isinstance(self.shortcut, nn.Sequential):  # 1x1 conv + BN projection
            shortcut = self.shortcut[1](conv2d(self.shortcut[0], x))
        return self.pool(torch.relu(y + shortcut))


class ResNetTrunk(CNNTrunk):
    """A small ResNet: one ``ResidualBlock`` per entry of ``channels``, then global pooling."""

    block = ResidualBlock

    # its own defaults: conf/trunk/resnet.yaml's narrower stem
    def __init__(self, in_channels: int = 16, channels: Sequence[int] = (32, 64, 128, 128), pool: Pool = "avg"):
        super().__init__(in_channels, channels, pool)


class MultiWidthConv1d(nn.Module):
    """Kim (2014): parallel 1-D convolutions of several widths, ReLU, max over time, concatenated."""

    def __init__(self, in_channels: int, widths: Sequence[int], maps: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_channels, maps, w, padding=w // 2) for w in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(conv(x)).amax(dim=2) for conv in self.convs], dim=1)


class TextCNNTrunk(nn.Module):
    """The Kim-2014 sentence CNN as a trunk: input [B, D, L] (embeddings as channels), one block."""

    def __init__(self, in_channels: int = 128, widths: Sequence[int] = (3, 4, 5), maps: int = 100):
        super().__init__()
        self.in_channels = in_channels
        self.blocks = nn.ModuleList([MultiWidthConv1d(in_channels, widths, maps)])
        self.out_features = maps * len(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[0](x)
