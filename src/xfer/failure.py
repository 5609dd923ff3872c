"""The failure policy: how an error ends a run, a sweep job or eval.py.

An ``XferError`` (and the few library errors whose message is the whole story) is printed as one
``error:`` line with no traceback; anything else is a bug and keeps its traceback. A single run exits
with the error's ``exit_code`` (2: wrong input, found before anything trained; 1: a run that failed);
a sweep job records the failure in its results.json and returns NaN, so the other jobs go on.

A run stopped by a signal (SIGTERM from a scheduler, Ctrl-C) is neither: it records ``status:
interrupted`` with the epoch it reached and the command that resumes it, and exits 128 + the signal
(143, 130), as shells expect. Lightning alone would exit 0 after SIGTERM, and a scheduler would take the
run for a success.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig

from xfer.errors import XferError
from xfer.io import disk_full_error, failed_file, is_disk_full

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


class Interrupted(BaseException):
    """SIGTERM, raised where the run is (as Ctrl-C raises KeyboardInterrupt). A BaseException, so no
    ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stopped_by(err: BaseException) -> int | None:
    """The signal that stopped the run, when ``err`` is how one arrives: ours (Interrupted), Lightning's
    SIGTERMException (its loops raise it at a step's end), KeyboardInterrupt, or the ``sys.exit(1)`` with
    which Lightning ends a fit after a KeyboardInterrupt. None for anything else."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if isinstance(err, Interrupted):
        return err.signum
    if isinstance(err, SIGTERMException):
        return int(signal.SIGTERM)
    if isinstance(err, KeyboardInterrupt):
        return int(signal.SIGINT)
    if isinstance(err, SystemExit) and isinstance(err.__context__, (KeyboardInterrupt, Interrupted)):
        return stopped_by(err.__context__)
    return None


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the run lasts, SIGTERM raises Interrupted wherever the run is. Lightning's own handler, which
    it chains before this one during fit, only stops its loops at the next step and lets the process end
    with exit 0; outside fit (data loading, testing, predictions) SIGTERM would kill the process without a
    word. Only the main thread may set signal handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted(cfg: DictConfig, stop: BaseException, signum: int) -> int:
    """Record a run stopped by ``signum`` (results.json ``status: interrupted``), print one line; the exit code."""
    from xfer.results import write_interrupted
    from xfer.runtime import global_rank

    progress = getattr(stop, "xfer_progress", None)
    if progress is None and isinstance(stop, SystemExit):
        progress = getattr(stop.__context__, "xfer_progress", None)
    message = write_interrupted(cfg, signal.Signals(signum).name, progress, write=global_rank() == 0)
    print(f"error: {message}", file=sys.stderr)
    return 128 + signum


def guarded(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float:
    """Run ``task`` and return its best validation accuracy: what a sweeper (Optuna) maximises; never
    a test score. A single run exits with a one-line error; a sweep job records the failure in its
    results.json and returns NaN, so the other jobs go on."""
    from xfer.results import write_failure
    from xfer.runtime import is_multirun

    try:
        with sigterm_raises():
            results = task(cfg)
        best_val = results["target"].get("best_val")
        return math.nan if best_val is None else float(best_val)
    except (KeyboardInterrupt, SystemExit, Interrupted) as stop:  # a signal ends a sweep too: it was asked to stop
        signum = stopped_by(stop)
        if signum is None:
            raise
        sys.exit(interrupted(cfg, stop, signum))
    except Exception as err:  # noqa: BLE001 - every failure is reported, then handled per mode
        if is_disk_full(err) and not isinstance(innermost(err), XferError):  # a write xfer did not name
            named = failed_file(err)
            err = disk_full_error(named or cfg.paths.output_dir, in_folder=named is None)
        write_failure(cfg, innermost(err), one_line(err))
        if is_multirun():
            log.error("job failed: %s", one_line(err))
            return math.nan
        sys.exit(report(err))
