"""Learning-rate schedules that every parameter group follows, including groups added mid-training.

Each optimizer group carries its own ``peak_lr``; the scheduler sets ``lr = peak_lr * factor`` on every
group at every step. A group that a strategy adds later (gradual unfreezing, LP-FT) therefore picks up
the current warm-up, cosine or plateau factor at once, with no per-group bookkeeping to extend
(the failure behind pytorch#62475 for ReduceLROnPlateau).
"""
from __future__ import annotations

import math
from typing import Literal, get_args

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

Schedule = Literal["cosine", "constant", "plateau"]  # optim.schedule; the config schema reads this list
SCHEDULES: tuple[str, ...] = get_args(Schedule)


class PeakScaledLR(LRScheduler):
    """``cosine``: linear warm-up then cosine to zero; ``constant``: warm-up then flat;
    ``plateau``: flat, times ``plateau_factor`` each time the monitored metric stalls for
    ``plateau_patience`` epochs (Lightning passes the metric to ``step``)."""

    def __init__(self, optimizer: Optimizer, kind: Schedule, total_steps: int, warmup_steps: int = 0, *,
                 plateau_factor: float, plateau_patience: int, plateau_mode: str = "min"):
        # plateau_factor and plateau_patience have no defaults here: optim.* in the config states them
        if kind not in SCHEDULES:
            raise ValueError(f"optim.schedule={kind!r} is not one of {', '.join(SCHEDULES)}")
        for group in optimizer.param_groups:
            group.setdefault("peak_lr", group["lr"])
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.plateau_factor = plateau_factor
        self.plateau_patience = plateau_patience
        self.plateau_mode = plateau_mode
        self.plateau_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad_epochs = 0
        self.steps_done = -1  # LRScheduler.__init__ calls step() once to set the first lrs
        super().__init__(optimizer)

    def factor(self) -> float:
        if self.kind == "plateau":
            return self.plateau_scale
        t = self.steps_done
        if t < self.warmup_steps:
            return (t + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (t - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        f = self.factor()
        return [group["peak_lr"] * f for group in self.optimizer.param_groups]

    def step(self, metric: float | None = None) -> None:  # type: ignore[override]
        if metric is not None:
            self._observe(float(metric))
        else:
            self.steps_done += 1
        super().step()

    def _observe(self, metric: float) -> None:
        better = (
            self.plateau_best is None
            or (metric < self.plateau_best if self.plateau_mode == "min" else metric > self.plateau_best)
        )
        if better:
            self.plateau_best, self.plateau_bad_epochs = metric, 0
            return
        self.plateau_bad_epochs += 1
        if self.plateau_bad_epochs > self.plateau_patience:
            self.plateau_scale *= self.plateau_factor
            self.plateau_bad_epochs = 0

