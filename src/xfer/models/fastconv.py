"""Exact shortcut for a convolution on a 1x1 feature map: a matmul with the kernel's centre tap.

The text trunk's last block sees a 1x1 map (a 48-token text folds into 6x8, then pools to 3x4, 2x2,
1x1). With same-size zero padding, every kernel tap but the centre one meets only padding there, so
the convolution is exactly ``x @ weight[:, :, centre].T``. oneDNN's conv kernels run that shape
(forward and backward) several times slower than the matmul (measured in scripts/bench.py). Same
parameters, same gradients (the off-centre taps get zero gradient, as in the conv), up to float
summation order. On 2x2 maps oneDNN was faster than any matmul form tried, so larger maps use the conv.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

_enabled = True


@contextlib.contextmanager
def reference_convs() -> Iterator[None]:
    """Run every conv as a plain ``nn.Conv2d`` inside this block (to count nominal FLOPs, or to test)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def _eligible(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    if not _enabled or x.ndim != 4 or x.shape[2] != 1 or x.shape[3] != 1:
        return False
    kh, kw = conv.kernel_size
    return (conv.groups == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and kh % 2 == 1 and kw % 2 == 1
            and conv.padding == (kh // 2, kw // 2))


def conv2d(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; on a 1x1 map with same-size padding and stride 1, as one matmul."""
    if not _eligible(conv, x):
        return conv(x)
    kh, kw = conv.kernel_size
    centre = conv.weight[:, :, kh // 2, kw // 2]  # [cout, cin]
    y = nn.functional.linear(x.flatten(1), centre, conv.bias)
    return y[:, :, None, None]
