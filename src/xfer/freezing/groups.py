"""Parameter groups as a pure function of (model, strategy, optimiser settings, epoch)."""
from __future__ import annotations

from typing import Any

from torch import nn

from xfer.freezing.base import Plan, Freezing, FreezingError

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def norm_and_bias_params(block: nn.Module) -> list[nn.Parameter]:
    """Normalisation affine parameters and every bias: what ``norm_only`` trains."""
    params: dict[int, nn.Parameter] = {}
    for module in block.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, NORM_TYPES) or pname == "bias":
                params[id(p)] = p
    return list(params.values())


def block_params(block: nn.Module, mode: str) -> list[nn.Parameter]:
    if mode == "all":
        return list(block.parameters())
    if mode == "norm":
        return norm_and_bias_params(block)
    return []


def plan_for(module: nn.Module, freezing: Freezing, optim: dict[str, Any], epoch: int) -> Plan:
    n = len(module.trunk.blocks)
    plan = freezing.plan(epoch, n, float(optim["lr"]), float(optim["trunk_lr"]))
    if len(plan.blocks) != n:
        raise FreezingError(f"strategy '{freezing.label}' planned {len(plan.blocks)} blocks for a trunk of {n}")
    return plan


def param_groups(module: nn.Module, freezing: Freezing, optim: dict[str, Any],
                 epoch: int = 0) -> list[dict[str, Any]]:
    """The optimizer groups for ``epoch``: one per new part (adapter, head, any extra parts) and one
    per training trunk block, each with its name, parameters, peak lr and weight decay."""
    plan = plan_for(module, freezing, optim, epoch)
    wd = float(optim["weight_decay"])
    trunk_wd = wd if freezing.trunk_weight_decay is None else float(freezing.trunk_weight_decay)
    groups: list[dict[str, Any]] = []
    if plan.new_lr is not None:
        for name, part in new_parts(module):
            if name == "head" and plan.head_frozen:
                continue
            params = list(part.parameters())
            if params:
                groups.append({"name": name, "params": params, "lr": plan.new_lr, "weight_decay": wd})
    for i, (block, bp) in enumerate(zip(module.trunk.blocks, plan.blocks)):
        params = block_params(block, bp.mode)
        if params:
            if not bp.lr > 0:
                raise FreezingError(f"strategy '{freezing.label}' gives trunk block {i} lr={bp.lr}; allowed: > 0")
            groups.append({"name": f"trunk.{i}", "params": params, "lr": bp.lr, "weight_decay": trunk_wd})
    return groups


def new_parts(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The task-specific parts: the adapter and head, plus any extra parts a strategy attached."""
    parts = [("adapter", module.adapter), ("head", module.head)]
    return parts + list(getattr(module, "extra_parts", {}).items())


def apply_plan(module: nn.Module, plan: Plan) -> None:
    """Set requires_grad to match ``plan`` and record which norm layers must stay in eval mode."""
    for name, part in new_parts(module):
        part.requires_grad_(plan.new_lr is not None and not (name == "head" and plan.head_frozen))
    frozen_norms: list[nn.Module] = []
    for block, bp in zip(module.trunk.blocks, plan.blocks):
        block.requires_grad_(False)
        for p in block_params(block, bp.mode):
            p.requires_grad_(True)
        if bp.mode == "frozen":
            frozen_norms += [m for m in block.modules() if isinstance(m, NORM_TYPES)]
    module.frozen_norms = frozen_norms
    module.train(module.training)  # re-applies eval mode to the frozen norms


def count_trained(module: nn.Module, freezing: Freezing, optim: dict[str, Any], epochs: int) -> dict[str, int]:
    """Total parameters, those the strategy trains in at least one epoch, and of those the trunk's.
    Computed from the plan, so it is right in every process layout (ddp_spawn trains in worker processes)."""
    trained: dict[int, int] = {}
    trunk: dict[int, int] = {}
    for epoch in range(max(1, epochs) if freezing.transitions() else 1):
        for group in param_groups(module, freezing, optim, epoch):
            sizes = {id(p): p.numel() for p in group["params"]}
            trained.update(sizes)
            if group["name"].startswith("trunk."):
                trunk.update(sizes)
    return {"trainable": sum(trained.values()), "total": sum(p.numel() for p in module.parameters()),
            "trunk_trainable": sum(trunk.values())}
