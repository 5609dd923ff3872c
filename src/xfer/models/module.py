"""TransferModule: one LightningModule for both stages, built from adapter, trunk and head."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from xfer.data.spec import SPLITS
from xfer.errors import ConfigError, NonFiniteLossError
from xfer.models.lr_schedule import PeakScaledLR
from xfer.models.scores import EpochStats

# The optimizer settings the module reads. They have no defaults here: every optimizer config states
# them (conf/optim/, and source_stage.optim in conf/train.yaml).
OPTIM_KEYS = ("lr", "weight_decay", "betas", "schedule", "warmup_fraction", "label_smoothing", "plateau_factor",
              "plateau_patience")

ParamGroupsFn = Callable[["TransferModule"], list[dict[str, Any]]]
# An extra loss term: (module, trunk features of the batch, batch) -> scalar
LossTerm = Callable[["TransferModule", torch.Tensor, Any], torch.Tensor]


def clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``, bit for bit, without its multiply-by-one when the norm is
    already within ``max_norm``: on a CPU that pass over every gradient is ~4% of a step here, and
    reading the norm costs no device sync. Returns the total norm."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    if not torch.isfinite(total) or total + 1e-6 > max_norm:  # torch's coefficient is below 1 (or NaN)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
    return total


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
        missing = [k for k in OPTIM_KEYS if k not in self.optim]
        if missing:
            raise ConfigError(f"the optimizer settings lack {', '.join(missing)}; allowed: a config that states "
                              f"{', '.join(OPTIM_KEYS)} (as conf/optim/adamw.yaml does)")
        self.param_groups_fn = param_groups
        self.loss_terms: list[LossTerm] = []
        self.task_loss_weight = 1.0  # a strategy may switch the task loss off for a phase
        # Norm layers a strategy froze: kept in eval mode so their running statistics stay put.
        self.frozen_norms: list[nn.Module] = []
        self.criterion = nn.CrossEntropyLoss(label_smoothing=float(self.optim["label_smoothing"]))
        self.test_confusion: list[list[int]] | None = None
        self.class_names: list[str] = [str(i) for i in range(num_classes)]
        # loss, accuracy, macro-F1 and the confusion matrix of each stage's epoch
        # (keys end in "_": a ModuleDict key may not shadow nn.Module.train)
        self.stats = nn.ModuleDict({f"{s}_": EpochStats(num_classes) for s in SPLITS})

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
        self.stats[f"{stage}_"].update(logits, y, loss)
        if stage == "train" and self._logging_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss, feats

    def _logging_step(self) -> bool:
        """Whether Lightning writes this step's logs (every ``trainer.log_every_n_steps``). Per-step
        values are logged only then: each ``self.log`` call costs about half a millisecond on a CPU,
        3% of a step here, and the other steps' values would never reach the logger."""
        connector = getattr(self._trainer, "_logger_connector", None)
        return True if connector is None else bool(connector.should_update_logs)

    def _log_epoch(self, stage: str) -> torch.Tensor | None:
        """Log the epoch's loss, accuracy and macro-F1 (synced across DDP processes); return the
        confusion matrix. Scores accumulate every step and are logged once, here."""
        stats = self.stats[f"{stage}_"]
        if stats.update_count == 0:  # e.g. a validation loop limited to zero batches
            return None
        scores = stats.compute()
        stats.reset()
        loss_name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        self.log_dict({loss_name: scores["loss"], f"{stage}/acc": scores["acc"], f"{stage}/f1": scores["f1"]},
                      prog_bar=stage == "val", sync_dist=True)
        return scores["confusion"]

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

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
        matrix = self._log_epoch("test")
        if matrix is None:
            return
        self.test_confusion = matrix.tolist()
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_figure"):
            import matplotlib.pyplot as plt

            from xfer.plots import confusion_figure

            fig = confusion_figure(matrix, self.class_names)
            experiment.add_figure("test/confusion_matrix", fig, global_step=self.global_step)
            plt.close(fig)  # a no-op logger (fast_dev_run) would leave it open

    # -- optimisation ------------------------------------------------------------------------
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        on_cpu = self.device.type == "cpu" and not self._mixed_precision()
        if gradient_clip_val and on_cpu and gradient_clip_algorithm in (None, "norm"):
            clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                            float(gradient_clip_val))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        optimizer, scheduler = self.make_optimizer(int(self.trainer.estimated_stepping_batches))
        if self.optim["schedule"] == "plateau":
            config = {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss",
                      "reduce_on_plateau": True, "strict": True}
        else:
            config = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _fused(self) -> bool | None:
        """``optim.fused``: auto = the fused AdamW kernel (one pass over each tensor instead of about a
        dozen) unless mixed precision clips gradients, which Lightning refuses for fused optimizers."""
        fused = self.optim.get("fused", "auto")
        if fused != "auto":
            return bool(fused) or None
        return None if self._mixed_precision() else True

    def _mixed_precision(self) -> bool:
        return self._trainer is not None and "mixed" in str(self.trainer.precision)

    def make_optimizer(self, total_steps: int) -> tuple[torch.optim.Optimizer, PeakScaledLR]:
        """AdamW over the strategy's parameter groups, and the schedule over ``total_steps`` steps."""
        groups = self.param_groups_fn(self)
        for group in groups:
            group["peak_lr"] = group["lr"]
        o = self.optim
        optimizer = torch.optim.AdamW(groups, lr=o["lr"], weight_decay=o["weight_decay"],
                                      betas=tuple(o["betas"]), fused=self._fused())
        scheduler = PeakScaledLR(
            optimizer, kind=o["schedule"], total_steps=total_steps,
            warmup_steps=int(round(o["warmup_fraction"] * total_steps)),
            plateau_factor=o["plateau_factor"], plateau_patience=o["plateau_patience"],
        )
        return optimizer, scheduler
