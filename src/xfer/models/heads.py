"""Task-specific classification heads: trunk features [B, F] -> logits [B, num_classes]."""
from __future__ import annotations

from torch import nn


class LinearHead(nn.Sequential):
    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.3):
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


class MLPHead(nn.Sequential):
    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.3):
        super().__init__(
            nn.Dropout(dropout),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
