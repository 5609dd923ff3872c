"""analyze.py: diagnostics that need no fine-tuning.

    python analyze.py transfer experiment=img2img [seed=1 ...]   # the config of train.py, and its overrides
    python analyze.py transfer run=<run folder>                  # the trunk that run started from
    python analyze.py transfer multirun=<sweep folder>          # each seed's source trunk of a sweep

``transfer``: transferability of the trunk at every cut depth, beside a random trunk's (see
xfer/analysis/transfer.py). With overrides, the source stage runs as in train.py (from the trunk cache when it
holds the trunk) and the report goes to logs/<name>/analysis/<stamp>_transfer_s<seed>/; with ``run=``, the
run's own config and source trunk (from the cache, or its source checkpoint) are used and the report goes to
<run>/analysis/. Bad input is one ``error:`` line, exit 2.
"""
from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from xfer.errors import CheckpointError, ConfigError

COMMANDS = ("transfer",)
log = logging.getLogger("xfer")


def compose(overrides: list[str]) -> DictConfig:
    """train.py's config for ``overrides``, without a Hydra run (``paths.output_dir`` is set by the caller)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from xfer.argv import CONF_DIR, check_choices
    from xfer.hydra_errors import one_line_hydra_errors

    bad = check_choices(overrides)
    if bad:
        raise ConfigError(bad)
    with one_line_hydra_errors(), initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "."  # replaced by the caller; no Hydra run resolves ${hydra:...} here
    return cfg


def _run_config(run: Path) -> tuple[DictConfig, dict[str, Any]]:
    saved = run / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"run={run}: no .hydra/config.yaml there; allowed: a run folder that train.py wrote")
    results = run / "results.json"
    try:
        out = json.loads(results.read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"run={run}: no readable results.json (the run did not finish); allowed: a finished "
                              f"run folder") from None
    return OmegaConf.load(saved), out


def source_state_of(cfg: DictConfig, run: Path | None, results: dict[str, Any] | None):
    """The source stage's model the target stage of ``cfg`` (or of the run) started from; None when it had
    none (the trunk as built: pretrained, or random for the controls)."""
    import torch

    from xfer.cache import TrunkCache
    from xfer.checkpoints import load_checkpoint

    if run is None:
        if not cfg.source_stage.enabled:
            return None
        from xfer.models.ecosystem import describe_trunk
        from xfer.source_stage import run_source_stage
        from xfer.target_stage import seeded_trunk

        with torch.random.fork_rng(devices=[]):
            trunk, _ = seeded_trunk(cfg)
        return run_source_stage(cfg, Path(cfg.paths.output_dir), describe_trunk(trunk)["sha256"]).state
    source = (results or {}).get("source")
    if not source:
        return None
    cache = TrunkCache(cfg.paths.cache_dir)
    if source.get("key") and cache.has(source["key"]):
        return cache.load(source["key"])[0]
    ckpt = Path(str(source.get("trained_in") or run)) / "checkpoints" / "source" / "best.ckpt"
    if not ckpt.is_file():
        raise CheckpointError(f"run={run}: its source trunk is neither in the cache ({cache.entry(source.get('key'))}) "
                              f"nor at {ckpt}; allowed: a run whose source trunk is kept (or rerun the analysis "
                              f"with its overrides: python analyze.py transfer <overrides>)")
    return load_checkpoint(ckpt)["state_dict"]


def sweep_runs(folder: Path) -> dict[int, Path]:
    """One finished run per seed of a sweep folder whose target stage started from a source-trained trunk."""
    picked: dict[int, Path] = {}
    for results in sorted(folder.rglob("results.json")):
        try:
            out = json.loads(results.read_text())
        except (OSError, ValueError):
            continue
        if out.get("status") == "ok" and out.get("source") and isinstance(out.get("seed"), int):
            picked.setdefault(out["seed"], results.parent)
    return picked


def transfer_sweep(folder: Path) -> list[Path]:
    """The transferability report of each seed's source trunk in a sweep: <sweep>/transfer/seed<k>/."""
    from xfer.analysis import write
    from xfer.analysis.transfer import transfer_scores

    if not folder.is_dir():
        raise ConfigError(f"multirun={folder}: not a folder; allowed: a multirun folder that train.py -m wrote")
    runs = sweep_runs(folder)
    if not runs:
        raise CheckpointError(f"multirun={folder}: no finished run there started from a source-trained trunk; allowed: "
                              f"a sweep whose strategies have a source stage (not scratch alone)")
    written = []
    for seed, run in sorted(runs.items()):
        cfg, results = _run_config(run)
        out = folder / "transfer" / f"seed{seed}"
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
        out.mkdir(parents=True, exist_ok=True)
        report = transfer_scores(cfg, source_state_of(cfg, run, results))
        report["command"] = f"python analyze.py transfer run={shlex.quote(str(run))}"
        write.write(report, out)
        written.append(out)
    return written


def transfer(args: list[str]) -> Path:
    from xfer.analysis import write
    from xfer.analysis.transfer import transfer_scores
    from xfer.schema import validate

    if args and args[0].startswith("multirun="):
        if len(args) > 1:
            raise ConfigError(f"{' '.join(args[1:])}: with multirun= each run's own config is used; allowed: "
                              f"multirun=<sweep folder> alone")
        return transfer_sweep(Path(args[0].split("=", 1)[1]).expanduser())[0].parent
    run_args = [a for a in args if a.startswith("run=")]
    if run_args:
        if len(args) > 1:
            raise ConfigError(f"{' '.join(a for a in args if not a.startswith('run='))}: with run= the run's own "
                              f"config is used; allowed: run=<run folder> alone, or overrides without run=")
        run = Path(run_args[0].split("=", 1)[1]).expanduser()
        if not run.is_dir():
            raise ConfigError(f"run={run}: not a folder; allowed: a run folder that train.py wrote")
        cfg, results = _run_config(run)
        if results.get("status") != "ok":
            raise CheckpointError(f"run={run}: its status is {results.get('status')!r}; allowed: a run that finished ok")
        folder = run / "analysis"
        command = f"python analyze.py transfer run={shlex.quote(str(run))}"
    else:
        cfg, results, run = compose(args), None, None
        validate(cfg)
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        folder = Path(str(cfg.paths.log_dir)) / str(cfg.name) / "analysis" / f"{stamp}_transfer_s{cfg.seed}"
        command = "python analyze.py transfer " + " ".join(shlex.quote(a) for a in args)
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    folder.mkdir(parents=True, exist_ok=True)
    state = source_state_of(cfg, run, results)
    report = transfer_scores(cfg, state)
    report["command"] = command
    write.write(report, folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    from xfer.failure import report

    args = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if not args or args[0] not in COMMANDS:
        given = args[0] if args else "(nothing)"
        print(f"error: analyze.py {given}: unknown command; allowed: {', '.join(COMMANDS)} "
              f"(python analyze.py transfer experiment=img2img)", file=sys.stderr)
        sys.exit(2)
    try:
        folder = transfer(args[1:])
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - one line for what the user can fix
        sys.exit(report(err))
    if folder.name == "transfer":  # multirun=: one report per seed; the sweep's summary shows them together
        print(f"written: {folder}/seed<k>/transfer.{{json,csv,md,png}}; rerun the summary to rank them: "
              f"python scripts/summarize.py {folder.parent}")
        return
    print((folder / "transfer.md").read_text())
    print(f"written: {folder}/transfer.{{json,csv,md,png}}")
