"""Hydra's own errors (an override of a key the config lacks, bad override syntax, a missing config, a
run folder it cannot make) as one ``error:`` line with exit 2, instead of Hydra's several lines.
HYDRA_FULL_ERROR=1 keeps Hydra's full report."""
from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator


def hydra_error_line(err: BaseException) -> str:
    """Hydra's own errors (an override of a key the config lacks, bad override syntax) as one line."""
    from xfer.schema import allowed_keys, unknown

    from xfer.errors import XferError

    inner: BaseException | None = err  # a Hydra callback or plugin that raised one of ours: its message says it all
    while inner is not None and not isinstance(inner, XferError):
        inner = inner.__cause__
    if inner is not None:
        return str(inner).strip().splitlines()[0]
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
        if parent in ("source", "target"):  # the file, columns and the like are the reader's settings
            return (f"{key} is not a known key of the chosen {parent}; a data set's file and columns are "
                    f"settings of its reader: {parent}.reader.{leaf} (python train.py --cfg job shows them)")
        if parent == "strategy" and strategy_sweep(sys.argv[1:]):
            v = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.lstrip("+~").startswith(f"{key}=")), "...")
            return (f"{key} is not a known key of the default strategy, and a multirun composes the sweep with it "
                    f"before any job chooses its strategy; beside a sweep over strategy= write {key}=choice({v}), "
                    "which each job applies to its own strategy")
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


def strategy_sweep(argv: list[str]) -> bool:
    """Whether ``argv`` is a multirun that sweeps over ``strategy=`` (a list, choice(), range or glob)."""
    if not any(a in ("-m", "--multirun") for a in argv):
        return False
    return any(a.startswith("strategy=") and ("," in a or "(" in a) for a in argv)


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
    except OSError as err:  # Hydra makes the run (or sweep) folder before the job starts: a read-only home
        from xfer.io import disk_full_error, is_disk_full
        from xfer.machine import unwritable

        line = unwritable(err)
        if line is None and is_disk_full(err) and err.filename:
            print(f"error: {disk_full_error(err.filename, in_folder=True)}", file=sys.stderr)
            sys.exit(1)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:  # Hydra's defaults list raises a plain ValueError for <group>=null
        if "Config group override must be" not in str(err):
            raise
        print(f"error: {str(err).strip().splitlines()[0]}; to drop a config group write ~<group> "
              f"(e.g. ~logger), to choose another write <group>=<name>", file=sys.stderr)
        sys.exit(2)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
