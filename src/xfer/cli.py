"""Entry-point plumbing: resolvers, early checks of config choices, resume=<run folder>, one-line errors.

Exit codes: 2 for input that is wrong before anything runs (a config key or value, a choice, a
checkpoint that is unsafe or does not fit), 1 for a run that failed (a NaN loss, missing data, ...).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
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
        # hydra/* choices also come from plugins (joblib, submitit_*, optuna): Hydra checks those itself
        if not m or m.group(1) not in groups or m.group(1).startswith("hydra/"):
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


_OVERRIDE_KEY = re.compile(r"^(?:~|\+\+|\+)?([^=~+][^=]*)=")


def override_key(arg: str) -> str | None:
    m = _OVERRIDE_KEY.match(arg)
    return m.group(1).strip() if m else None


def expand_resume(argv: list[str]) -> list[str]:
    """``resume=<run folder>``: that run's command-line overrides, then the ones given here (which win),
    so ``python train.py resume=logs/img2txt/runs/<run>`` alone continues the run with its settings.
    Raises ConfigError when the folder is not a run folder."""
    from xfer.schema import ConfigError

    folder = next((a.split("=", 1)[1] for a in argv if override_key(a) == "resume"), None)
    if folder in (None, "", "null", "last"):
        return argv
    saved = Path(folder).expanduser() / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        what = ("not a run folder (no .hydra/overrides.yaml)" if Path(folder).expanduser().is_dir()
                else "no such folder")
        raise ConfigError(f"resume={folder}: {what}; give a folder such as logs/<experiment>/runs/<run>")
    try:
        earlier = [str(o) for o in OmegaConf.load(saved)]
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"resume={folder}: {saved} is unreadable ({type(err).__name__})") from None
    given = {override_key(a) for a in argv}
    kept = [o for o in earlier if override_key(o) not in given | {"resume", "ckpt_path"}]
    return [*argv, *kept]


def hydra_error_line(err: BaseException) -> str:
    """Hydra's own errors (an override of a key the config lacks, bad override syntax) as one line."""
    from xfer.schema import allowed_keys, unknown

    text = str(err)
    m = re.search(r"Could not override '([^']+)'", text)
    if m and "not in struct" in str(err.__cause__ or ""):
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        allowed = allowed_keys(parent)
        if allowed is not None and leaf in allowed:  # a real setting the config file leaves out
            value = re.search(r"use \+(\S+)", text)
            return (f"{key} is not set in the config, so it cannot be overridden; to add it write "
                    f"+{value.group(1) if value else key + '=...'}")
        if allowed is not None:
            extra = "the arguments of pytorch_lightning.Trainer" if parent == "trainer" else ""
            return str(unknown(key, allowed, extra))
        return f"{key} is not a known key of the chosen {parent or 'config'}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and "hydra.cc/docs" not in line]
    override = getattr(err, "override", None)
    if override is not None:  # OverrideParseException
        return (f"cannot parse the override {override}: {'; '.join(lines)} "
                f"(syntax: https://hydra.cc/docs/advanced/override_grammar/basic/)")
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        lines.append(str(cause).strip().splitlines()[0])
    return "; ".join(lines) or type(err).__name__


@contextlib.contextmanager
def one_line_hydra_errors() -> Iterator[None]:
    """Around ``@hydra.main``: Hydra's composition errors end as one ``error:`` line and exit 2 (Hydra
    prints several lines). HYDRA_FULL_ERROR=1 keeps Hydra's full report."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing and exiting
    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {hydra_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:
        return False



def input_errors() -> tuple[type[BaseException], ...]:
    """Errors in what the user gave (config, checkpoint), found before anything trains: exit code 2."""
    from xfer.evaluate import CheckpointError
    from xfer.schema import ConfigError
    from xfer.freezing.base import FreezingError

    return (ConfigError, CheckpointError, FreezingError)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is the whole story: printed as one line, no traceback."""
    from omegaconf.errors import OmegaConfBaseException

    from xfer.cache import CacheError
    from xfer.data.errors import DataError
    from xfer.models.module import NonFiniteLossError
    from xfer.freezing.base import FreezingError

    return (DataError, FreezingError, CacheError, NonFiniteLossError, OmegaConfBaseException, ValueError,
            FileNotFoundError)


def one_line(err: BaseException) -> str:
    cause = err
    # hydra.utils.instantiate wraps constructor errors; the user's error is the innermost one
    while cause.__cause__ is not None and "Error in call to target" in str(cause):
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def guarded(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float:
    """Run ``task`` and return its best validation accuracy: what a sweeper (Optuna) maximises; never
    a test score. A single run exits 1 with a one-line error; a sweep job records the failure in its
    results.json and returns NaN, so the other jobs go on."""
    try:
        results = task(cfg)
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
        sys.exit(2 if isinstance(err, input_errors()) else 1)


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
