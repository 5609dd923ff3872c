"""Entry-point plumbing: resolvers, early checks of config choices, one-line errors."""
from __future__ import annotations

import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("xfer")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("xfer_tag"):
        # cached: one random tag per process, so a run folder is named once and never collides with a
        # run started in the same second
        OmegaConf.register_new_resolver("xfer_tag", lambda: os.urandom(3).hex(), use_cache=True)


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    groups = {}
    for d in sorted(p for p in conf_dir.rglob("*") if p.is_dir()):
        choices = sorted(f.stem for f in d.glob("*.yaml"))
        if choices:
            groups[d.relative_to(conf_dir).as_posix()] = choices
    return groups


_CHOICE = re.compile(r"^(?:override\s+)?([a-z_/]+)(?:@[\w.]+)?=(.*)$")


def check_choices(argv: list[str], conf_dir: Path = CONF_DIR) -> str | None:
    """An error line for the first command-line choice that names no config file, else None."""
    groups = config_groups(conf_dir)
    for arg in argv:
        m = _CHOICE.match(arg.lstrip("+~"))
        if not m or m.group(1) not in groups:
            continue
        group, value = m.group(1), m.group(2)
        values = _sweep_values(value)
        for v in values:
            if v not in groups[group] and v != "null":
                return f"{group}={v} is not a known choice; allowed: {', '.join(groups[group])}"
    return None


def _sweep_values(value: str) -> list[str]:
    value = value.strip()
    m = re.match(r"^choice\((.*)\)$", value)
    if m:
        value = m.group(1)
    return [v.strip().strip("'\"") for v in value.split(",") if v.strip()]


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:
        return False



def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is the whole story: printed as one line, no traceback."""
    from omegaconf.errors import OmegaConfBaseException

    from xfer.cache import CacheError
    from xfer.data.errors import DataError
    from xfer.models.module import NonFiniteLossError
    from xfer.strategies.base import StrategyError

    return (DataError, StrategyError, CacheError, NonFiniteLossError, OmegaConfBaseException, ValueError,
            FileNotFoundError)


def one_line(err: BaseException) -> str:
    cause = err
    # hydra.utils.instantiate wraps constructor errors; the user's error is the innermost one
    while cause.__cause__ is not None and "Error in call to target" in str(cause):
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def guarded(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float:
    """Run ``task``. A single run exits 1 with a one-line error; a sweep job records the failure in
    its results.json and returns NaN, so the other jobs go on."""
    try:
        results = task(cfg)
        if cfg.get("objective", "val") == "test":
            return float(results["target"]["test"].get("test/acc", math.nan))
        best_val = results["target"].get("best_val")
        return math.nan if best_val is None else float(best_val)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is reported, then handled per mode
        message = one_line(err)
        _record_failure(cfg, err, message)
        if is_multirun():
            log.error("job failed: %s", message)
            return math.nan
        if not isinstance(err, user_errors()):
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


def _record_failure(cfg: DictConfig, err: BaseException, message: str) -> None:
    from xfer.io import atomic_write_json

    try:
        run_dir = Path(cfg.paths.output_dir)
        strategy = OmegaConf.select(cfg, "strategy._target_", default="?").rsplit(".", 1)[-1].lower()
        from hydra.core.hydra_config import HydraConfig

        strategy = HydraConfig.get().runtime.choices.get("strategy", strategy)
        atomic_write_json(run_dir / "results.json", {
            "status": "failed", "error": message, "error_type": type(err).__name__,
            "experiment": cfg.get("name"), "strategy": {"name": strategy}, "seed": cfg.get("seed"),
            "fraction": OmegaConf.select(cfg, "target.fraction"),
            "samples_per_class": OmegaConf.select(cfg, "target.samples_per_class"),
            "run_dir": str(run_dir),
        })
    except Exception:  # noqa: BLE001 - never let reporting hide the real error
        pass
