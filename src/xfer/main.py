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
    sys.exit(sweep_exit_code())


def sweep_exit_code() -> int:
    """0 after a single run or a sweep whose jobs all finished; 1, with one line, after a sweep in which a job
    failed or was interrupted (each recorded in its results.json, the summary counting it), so a script or
    a scheduler does not take the sweep for a success."""
    from xfer import hydra_callbacks

    if hydra_callbacks.last_sweep is None:
        return 0
    folder, failed, seen = hydra_callbacks.last_sweep
    hydra_callbacks.last_sweep = None
    if not failed:
        return 0
    shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
    print(f"error: {len(failed)} of {seen} sweep jobs did not finish ({shown}); their errors are in their "
          f"results.json and {folder / 'summary.md'}; rerun the sweep with resume=last to retry only them",
          file=sys.stderr)
    return 1
