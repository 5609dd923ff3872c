"""train.py's entry point: ``main()`` expands ``resume=<run folder>`` and pre-checks the config choices,
then hands the command line to Hydra, which composes the config and runs ``run_job`` once per job."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from xfer.argv import CONF_DIR, check_choices, expand_resume
from xfer.errors import ConfigError


def run_job(cfg: DictConfig) -> float:
    """One job (a single run, or one job of a sweep): its best validation accuracy, what a sweeper
    maximises."""
    from xfer.failure import guarded
    from xfer.pipeline import run
    from xfer.results import summary_lines
    from xfer.runtime import global_rank

    def task(c: DictConfig) -> dict:
        out = run(c)
        if global_rank() == 0:  # under multi-process DDP every rank runs this
            print("\n".join(summary_lines(out)))
        return out

    return guarded(task, cfg)


hydra_job = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")(run_job)


def main(argv: list[str] | None = None) -> None:
    from xfer.hydra_errors import one_line_hydra_errors

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        args = expand_resume(args)  # resume=<run folder>: that run's overrides, then these
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    bad = check_choices(args)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args]  # Hydra reads the command line from sys.argv
    with one_line_hydra_errors():
        hydra_job()
