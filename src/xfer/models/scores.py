"""Per-epoch classification scores from one cheap update per step: a confusion matrix and the loss sum.

Accuracy and macro-F1 both follow from the confusion matrix, so a step pays for one ``bincount``
instead of one torchmetrics metric per score (each re-checks its inputs and keeps its own state).
"""
from __future__ import annotations

import torch
from torchmetrics import Metric


def accuracy_and_macro_f1(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy, and macro-F1 over the classes present in the targets or the predictions (as
    torchmetrics' ``MulticlassF1Score(average="macro")``), from ``confusion[true, predicted]``."""
    c = confusion.float()  # float32, not 64: MPS has no float64
    tp = c.diagonal()
    denominator = 2 * tp + (c.sum(0) - tp) + (c.sum(1) - tp)  # 2TP + FP + FN
    present = denominator > 0
    f1 = 2 * tp[present] / denominator[present]
    accuracy = tp.sum() / c.sum().clamp_min(1)
    macro_f1 = f1.mean() if present.any() else torch.zeros(())
    return accuracy, macro_f1


class EpochStats(Metric):
    """Confusion matrix and mean loss of an epoch; summed across DDP processes by ``compute``."""

    full_state_update = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("loss_sum", torch.zeros(()), dist_reduce_fx="sum")  # float32: MPS has no float64
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        n = self.num_classes
        cells = target * n + logits.detach().argmax(dim=1)
        self.confusion += torch.bincount(cells, minlength=n * n).view(n, n)
        self.loss_sum += loss.detach().float() * target.numel()
        self.count += target.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        accuracy, macro_f1 = accuracy_and_macro_f1(self.confusion)
        loss = (self.loss_sum / self.count.clamp_min(1)).float()
        return {"acc": accuracy, "f1": macro_f1, "loss": loss, "confusion": self.confusion.clone()}
