from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (make test runs one worker per core) each worker, and every train.py it starts, keeps
# to one thread: two workers with a thread per core each would contend for the same cores (set before
# torch is imported in the worker; a run's own threads= setting still applies).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]

# Small settings for runs that only need to exercise the machinery (seconds, not minutes).
# Groups chosen through a package in the defaults list: the key a command line uses for them (the default
# experiment's target is text, so an augment choice goes to its image source).
PACKAGED = {"adapter": "adapter@target_adapter", "augment": "augment@source.augment"}


def choice_overrides() -> list[str]:
    """``<key>=<choice>`` for every config file of every group but hydra's (composed by Hydra itself)."""
    from xfer.argv import config_groups

    return [f"{PACKAGED.get(group, group)}={choice}" for group, choices in config_groups().items()
            if group != "hydra" for choice in choices]


QUICK = [
    "source_stage.max_epochs=1", "source.fraction=0.2", "trainer.max_epochs=1", "target.fraction=0.1",
    "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false", "threads=1",
]


def run_train(args: list[str], home: Path, check: bool = True, env: dict | None = None,
              script: str = "train.py", timeout: int = 600) -> subprocess.CompletedProcess:
    """Run train.py as a user would, with logs and cache under ``home``."""
    full_env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@contextlib.contextmanager
def process_state_kept():
    """On leaving, the process is as on entering: the environment (XFER_HOME, PL_GLOBAL_SEED, ...),
    HydraConfig and GlobalHydra (cleared on entry too), torch's thread count and the random generators'
    states, whatever a run in this process changed."""
    import random

    import numpy as np
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    saved_env, saved_hydra, saved_threads = dict(os.environ), HydraConfig.instance().cfg, torch.get_num_threads()
    saved_rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved_hydra
        GlobalHydra.instance().clear()
        torch.set_num_threads(saved_threads)
        random.setstate(saved_rng[0])
        np.random.set_state(saved_rng[1])
        torch.set_rng_state(saved_rng[2])
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        os.environ.update(saved_env)


ENTRY_POINTS = {"train.py": "xfer.main", "eval.py": "xfer.evaluation", "analyze.py": "xfer.analysis.cli"}


def run_train_in_process(args: list[str], home: Path, check: bool = True,
                         script: str = "train.py") -> subprocess.CompletedProcess:
    """``XFER_HOME=<home> python <script> <args>`` run by its ``main`` (``ENTRY_POINTS``) in this process, without the
    interpreter's start-up: what ``run_train`` returns (returncode, stdout, stderr), for tests of the
    command line that need neither a fresh process nor a second one (a sweep with the basic launcher runs
    its jobs in one process anyway). stdout and stderr are what the program wrote to ``sys.stdout`` and
    ``sys.stderr``, Hydra's console log included; Lightning's own console lines (bound to the real stderr
    when it was imported) are not in them.

    Records logged where pytest captures them (a script's ``logging.basicConfig`` adds no console handler
    then) are not in stderr either: each script keeps a subprocess test of its one-line errors.

    Afterwards the process is as before: sys.argv, the environment, GlobalHydra and HydraConfig, torch's
    thread count, the random generators' states, the warnings filters, and every logger's level, handlers
    and flags (Hydra configures logging per job)."""
    import importlib
    import io
    import logging
    import warnings

    main = importlib.import_module(ENTRY_POINTS[script]).main
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    saved_logging = [(lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers]
    saved_argv, saved_filters = list(sys.argv), list(warnings.filters)
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    try:
        with process_state_kept(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            os.environ.update({"XFER_HOME": str(home), "PYTHONUNBUFFERED": "1"})
            sys.argv = [str(ROOT / script)]
            try:
                main([str(a) for a in args])
            except SystemExit as stop:
                code = stop.code
    finally:
        ours = {lg for lg, *_ in saved_logging}
        for lg in [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]:
            if lg not in ours:  # a logger first made by the run: as a fresh one
                for h in list(lg.handlers):
                    lg.removeHandler(h)
                lg.setLevel(logging.NOTSET)
                lg.propagate, lg.disabled = True, False
        for lg, handlers, level, propagate, disabled in saved_logging:
            for h in list(lg.handlers):
                if h not in handlers:
                    lg.removeHandler(h)
                    h.close()
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        sys.argv = saved_argv
        warnings.filters[:] = saved_filters
    if isinstance(code, str):  # sys.exit("message"): Python prints it to stderr and exits 1
        err.write(code + "\n")
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    proc = subprocess.CompletedProcess([script, *args], returncode, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_script_in_process(script: str, argv: list[str]) -> subprocess.CompletedProcess:
    """``python scripts/<script>.py <argv>`` by its ``main(argv)`` in this process (for tests whose subject
    is what the script computes, not its start-up): returncode, stdout and stderr, as ``subprocess.run``."""
    import contextlib
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location(f"scripts_{script}", ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = module.main([str(a) for a in argv])
        except SystemExit as stop:  # argparse's usage errors
            code = stop.code
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess([f"scripts/{script}.py", *argv], returncode, out.getvalue(), err.getvalue())


class RunFailed(AssertionError):
    """An in-process run that ended where train.py would have exited non-zero (``code``)."""

    def __init__(self, message: str, code: int | None):
        super().__init__(message)
        self.code = code


def run_in_process(overrides: list[str], home: Path) -> dict:
    """Run the pipeline in this process as ``XFER_HOME=<home> python train.py <overrides>`` would, without
    the ~7 s start-up: its results dict (also in <run>/results.json). For tests whose subject is the
    pipeline, not the command line. It mimics ``xfer.main.main`` -> ``@hydra.main`` -> ``Hydra.run`` ->
    ``hydra.core.utils.run_job`` -> ``xfer.main.run_job``: resume= expansion and the choice pre-check,
    the composed config with its hydra node (RUN mode, ``hydra.runtime.choices``), a fresh run folder
    from ``hydra.run.dir`` (<home>/logs/<name>/runs/<stamp>_<strategy>_s<seed>_<tag>), its
    .hydra/{config,hydra,overrides}.yaml and train.log, then ``xfer.failure.guarded`` around
    ``xfer.pipeline.run``, which prints the summary lines (``xfer.results.summary_lines``) to stdout.
    Log records reach pytest's ``caplog`` (the root logger is at INFO during the run, as Hydra sets it).
    A run that fails raises RunFailed (from the run's error) after writing its failed results.json.

    Afterwards the process is as before: XFER_HOME and every other environment variable the run set
    (PL_GLOBAL_SEED, ...), HydraConfig, GlobalHydra, torch's thread count, the random generators'
    states and the root logger's level and handlers."""
    import copy
    import logging

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import _save_config, env_override
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict, read_write

    from xfer.argv import check_choices, expand_resume
    from xfer.errors import ConfigError
    from xfer.failure import guarded
    from xfer.pipeline import run
    from xfer.results import summary_lines
    from xfer.runtime import global_rank

    args = expand_resume([str(o) for o in overrides])  # as main(): resume=<run folder> brings its overrides
    bad = check_choices(args)
    if bad:
        raise ConfigError(bad)

    root = logging.getLogger()
    saved_level, handler = root.level, None
    try:
        with process_state_kept(), initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            os.environ["XFER_HOME"] = str(home)  # read when the config is composed
            cfg = compose("train", overrides=args, return_hydra_config=True)
            if cfg.hydra.mode is None:  # as Hydra.run
                cfg.hydra.mode = RunMode.RUN
            HydraConfig.instance().set_config(cfg)  # as run_job: the run folder's name reads the choices
            output_dir = Path(os.path.abspath(str(OmegaConf.select(cfg, "hydra.run.dir"))))
            assert output_dir.parent == Path(os.path.abspath(home)) / "logs" / str(cfg.name) / "runs", output_dir
            assert not output_dir.exists(), f"{output_dir} is not a fresh run folder"
            with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
                cfg.hydra.runtime.output_dir = str(output_dir)
            HydraConfig.instance().set_config(cfg)
            task_cfg = copy.deepcopy(cfg)
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
            output_dir.mkdir(parents=True)
            # Hydra's job logging, less its console handler (pytest captures the records): train.log, INFO
            handler = logging.FileHandler(output_dir / "train.log")
            handler.setFormatter(logging.Formatter(cfg.hydra.job_logging.formatters.simple.format))
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            if cfg.hydra.output_subdir is not None:  # what resume=, resume=last and eval.py read
                saved = output_dir / str(cfg.hydra.output_subdir)
                _save_config(task_cfg, "config.yaml", saved)
                _save_config(hydra_cfg, "hydra.yaml", saved)
                _save_config(cfg.hydra.overrides.task, "overrides.yaml", saved)

            outcome: dict = {}

            def task(c):  # xfer.main.run_job's task
                out = run(c)
                if global_rank() == 0:
                    print("\n".join(summary_lines(out)))
                outcome["results"] = out
                return out

            with env_override(hydra_cfg.hydra.job.env_set):
                try:
                    guarded(task, task_cfg)
                except SystemExit as stop:  # a single run exits with the error's code
                    raise RunFailed(f"train.py {' '.join(args)} would exit {stop.code}", stop.code) \
                        from stop.__context__
            return outcome["results"]
    finally:
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved_level)


def results_files(home: Path) -> list[Path]:
    return sorted((home / "logs").rglob("results.json"))


def load_results(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def full_disk(path, data):
    """An ``atomic_write_bytes`` on a full disk: for tests that monkeypatch a module's writer with it."""
    from xfer.errors import DiskFullError

    raise DiskFullError(f"the disk is full: cannot write {path}")
