"""The failure policy: how an error ends a run, a sweep job or eval.py.

An ``XferError`` (and the few library errors whose message is the whole story) is printed as one
``error:`` line with no traceback; anything else is a bug and keeps its traceback. A single run exits
with the error's ``exit_code`` (2: wrong input, found before anything trained; 1: a run that failed);
a sweep job records the failure in its results.json and returns NaN, so the other jobs go on.
"""
from __future__ import annotations

import logging
import math
import sys
import traceback
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from xfer.errors import XferError

log = logging.getLogger("xfer")


def is_user_error(err: BaseException) -> bool:
    """Errors whose message is the whole story: printed as one line, no traceback."""
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, (XferError, OmegaConfBaseException, ValueError, FileNotFoundError))


def exit_code(err: BaseException) -> int:
    return err.exit_code if isinstance(err, XferError) else 1


def innermost(err: BaseException) -> BaseException:
    """hydra.utils.instantiate wraps a constructor's error; the user's error is the innermost one."""
    while err.__cause__ is not None and "Error in call to target" in str(err):
        err = err.__cause__
    return err


def one_line(err: BaseException) -> str:
    cause = innermost(err)
    text = str(cause).strip().splitlines()
    if len(text) > 1 and text[0].startswith("Caught ") and "worker" in text[0]:
        # raised in a DataLoader worker: torch re-raises it with the worker's traceback; its last line is the error
        last = text[-1]
        prefix = f"{type(cause).__module__}.{type(cause).__name__}: "
        return last[len(prefix):] if last.startswith(prefix) else last.split(": ", 1)[-1]
    return text[0] if text else type(cause).__name__


def report(err: BaseException) -> int:
    """Print ``err`` as an ``error:`` line (after its traceback when it is a bug); its exit code."""
    if not is_user_error(innermost(err)):
        traceback.print_exc()
    print(f"error: {one_line(err)}", file=sys.stderr)
    return exit_code(innermost(err))


def guarded(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float:
    """Run ``task`` and return its best validation accuracy: what a sweeper (Optuna) maximises; never
    a test score. A single run exits with a one-line error; a sweep job records the failure in its
    results.json and returns NaN, so the other jobs go on."""
    from xfer.results import write_failure
    from xfer.runtime import is_multirun

    try:
        results = task(cfg)
        best_val = results["target"].get("best_val")
        return math.nan if best_val is None else float(best_val)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is reported, then handled per mode
        write_failure(cfg, innermost(err), one_line(err))
        if is_multirun():
            log.error("job failed: %s", one_line(err))
            return math.nan
        sys.exit(report(err))
