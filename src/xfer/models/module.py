"""TransferModule: one LightningModule for both stages, built from adapter, trunk and head."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from xfer.models.schedule import PeakScaledLR


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


ParamGroupsFn = Callable[["TransferModule"], list[dict[str, Any]]]
# An extra loss term: (module, trunk features of the batch, batch) -> scalar
LossTerm = Callable[["TransferModule", torch.Tensor, Any], torch.Tensor]


def default_param_groups(module: "TransferModule") -> list[dict[str, Any]]:
    """Every trainable parameter in one group at ``optim.lr``."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"name": "all", "params": params, "lr": module.optim["lr"]}]


class TransferModule(pl.LightningModule):
    """adapter -> trunk -> head, trained with cross-entropy.

    ``param_groups`` (a pure function of the module) decides what the optimizer sees; the freezing
    strategy supplies it. Extra loss terms (a strategy's regulariser) are callables of the module,
    added to the task loss in training.
    """

    def __init__(self, adapter: nn.Module, trunk: nn.Module, head: nn.Module, num_classes: int,
                 optim: dict[str, Any], param_groups: ParamGroupsFn = default_param_groups):
        super().__init__()
        self.adapter, self.trunk, self.head = adapter, trunk, head
        self.num_classes = num_classes
        self.optim = dict(optim)
        self.param_groups_fn = param_groups
        self.loss_terms: list[LossTerm] = []
        self.task_loss_weight = 1.0  # a strategy may switch the task loss off for a phase
        # Norm layers a strategy froze: kept in eval mode so their running statistics stay put.
        self.frozen_norms: list[nn.Module] = []
        self.criterion = nn.CrossEntropyLoss(label_smoothing=float(self.optim.get("label_smoothing", 0.0)))
        metrics = MetricCollection({
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        })
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion: list[list[int]] | None = None
        self.class_names: list[str] = [str(i) for i in range(num_classes)]
        self.metrics = nn.ModuleDict({f"{s}_": metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")})

    # -- model -------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.adapter(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> "TransferModule":
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    # -- steps -------------------------------------------------------------------------------
    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
              ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        feats = self.features(x)
        logits = self.head(feats)
        loss = self.criterion(logits, y)
        self.metrics[f"{stage}_"].update(logits, y)
        if stage == "test":
            self.confusion.update(logits, y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=stage != "test",
                 batch_size=len(y))
        self.log_dict(self.metrics[f"{stage}_"], on_step=False, on_epoch=True, prog_bar=stage == "val",
                      batch_size=len(y))
        return loss, feats

    def training_step(self, batch, batch_idx):
        task_loss, feats = self._step(batch, "train")
        return self.add_loss_terms(self.task_loss_weight * task_loss, feats, batch)

    def add_loss_terms(self, loss: torch.Tensor, feats: torch.Tensor, batch: Any) -> torch.Tensor:
        """``loss`` plus the strategy's extra terms, checked to be finite."""
        for term in self.loss_terms:
            loss = loss + term(self, feats, batch)
        self.check_finite(loss)
        return loss

    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step "
                f"{self.global_step}: lower the learning rate or check the data"
            )

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        matrix = self.confusion.compute()
        self.confusion.reset()
        self.test_confusion = matrix.tolist()
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_figure"):
            import matplotlib.pyplot as plt

            from xfer.plots import confusion_figure

            fig = confusion_figure(matrix, self.class_names)
            experiment.add_figure("test/confusion_matrix", fig, global_step=self.global_step)
            plt.close(fig)  # a no-op logger (fast_dev_run) would leave it open

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = self.param_groups_fn(self)
        for group in groups:
            group["peak_lr"] = group["lr"]
        o = self.optim
        optimizer = torch.optim.AdamW(groups, lr=o["lr"], weight_decay=o["weight_decay"],
                                      betas=tuple(o.get("betas", (0.9, 0.999))))
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = PeakScaledLR(
            optimizer, kind=o["schedule"], total_steps=total,
            warmup_steps=int(round(o["warmup_fraction"] * total)),
            plateau_factor=o.get("plateau_factor", 0.5), plateau_patience=o.get("plateau_patience", 1),
        )
        if o["schedule"] == "plateau":
            config = {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss",
                      "reduce_on_plateau": True, "strict": True}
        else:
            config = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": config}
