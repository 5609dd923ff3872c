"""eval.py: test a saved target model again.

    python eval.py ckpt_path=<run>/checkpoints/target/best.ckpt

The model and the target data are rebuilt from the run's .hydra/config.yaml (the tokenizer is refitted
on the same training split), the checkpoint is loaded as weights only, and the test split is scored.
Nothing in the run folder is written.

Options (key=value):
  ckpt_path=<file>    the checkpoint (required, unless run= is given)
  run=<run folder>    shorthand for ckpt_path=<run>/checkpoints/target/best.ckpt
  config=<file>       the config to rebuild from (default: <run>/.hydra/config.yaml)
  out=<file.json>     also write the metrics there (atomically)
  threads=<n>         torch threads
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from xfer.checkpoints import load_checkpoint, run_dir_of, state_mismatch
from xfer.errors import CheckpointError, ConfigError

OPTIONS = ("ckpt_path", "run", "config", "out", "threads")


def parse(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in OPTIONS:
            raise ConfigError(f"{arg}: not an option; allowed: {', '.join(k + '=...' for k in OPTIONS)}")
        opts[key] = value
    if "run" in opts and "ckpt_path" not in opts:
        opts["ckpt_path"] = f"{opts['run'].rstrip('/')}/checkpoints/target/best.ckpt"
    if not opts.get("ckpt_path"):
        raise ConfigError("ckpt_path=<run>/checkpoints/target/best.ckpt is required")
    if not Path(opts["ckpt_path"]).is_file():
        raise ConfigError(f"{opts['ckpt_path']}: no such checkpoint file")
    if "threads" in opts and not (opts["threads"].isdigit() and int(opts["threads"]) >= 1):
        raise ConfigError(f"threads={opts['threads']}: must be an integer >= 1")
    return opts


def main(argv: list[str] | None = None) -> None:
    """eval.py's entry point: exits 0, or with the error's exit code after one ``error:`` line."""
    import logging
    import warnings

    from xfer.failure import report

    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:  # before the heavy imports: a typo answers at once
        sys.exit(report(err))
    logging.basicConfig(level=logging.WARNING)
    for name in ("pytorch_lightning", "lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (UserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    try:
        import torch

        from xfer.io import atomic_write_json

        if "threads" in opts:
            torch.set_num_threads(int(opts["threads"]))
        out = evaluate(opts["ckpt_path"], opts.get("config"))
        print("\n".join(eval_lines(out)))
        if opts.get("out"):
            atomic_write_json(opts["out"], out)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - one line for what the user can fix, a traceback otherwise
        sys.exit(report(err))


def evaluate(ckpt_path: str | os.PathLike, config: str | os.PathLike | None = None) -> dict[str, Any]:
    """Test a saved target model on its run's test split; the model and data come from the run's
    ``.hydra/config.yaml`` (or ``config``)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from xfer import build
    from xfer.schema import validate

    ckpt = Path(ckpt_path)
    data = load_checkpoint(ckpt)
    run_dir = run_dir_of(ckpt)
    cfg_file = Path(config) if config else (run_dir / ".hydra" / "config.yaml" if run_dir else None)
    if cfg_file is None or not cfg_file.is_file():
        raise ConfigError(f"no run config for {ckpt}: expected <run>/checkpoints/target/<name>.ckpt next to "
                          f"<run>/.hydra/config.yaml; give one with config=<run>/.hydra/config.yaml")
    cfg = OmegaConf.load(cfg_file)
    validate(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build.datamodule(cfg.target, int(cfg.seed))
    trunk = build.trunk(cfg.trunk)
    module = build.model(dm.spec, trunk, cfg.target_adapter, cfg.head, build.to_dict(cfg.optim))
    module.class_names = list(dm.spec.class_names)
    # a joint run's checkpoint also holds the source adapter and head, which testing never uses
    state = {k: v for k, v in data["state_dict"].items() if not k.startswith("extra_parts.")}
    mismatch = state_mismatch(module.state_dict(), state, here=f"the model {cfg_file} builds")
    if mismatch:
        hint = ("; the tokenizer refitted on the training split has another vocabulary: did the data change?"
                if "embedding" in mismatch else "")
        raise CheckpointError(f"checkpoint {ckpt} does not fit: {mismatch}{hint}")
    module.load_state_dict(state, strict=True)

    recorded = _recorded(run_dir)
    sizes = dm.sizes()
    if recorded and recorded.get("target", {}).get("sizes") not in (None, sizes):
        raise CheckpointError(f"the target data rebuilt from {cfg_file} differ from the run's "
                              f"(sizes {sizes} now, {recorded['target']['sizes']} then); did the data change?")
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, fast_dev_run=False)
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {
        "checkpoint": str(ckpt), "epoch": data.get("epoch"), "config": str(cfg_file),
        "run_dir": None if run_dir is None else str(run_dir), "dataset": cfg.target.name,
        "test": {k: float(v) for k, v in tested.items()}, "n_test": len(dm.datasets["test"]),
        "confusion_matrix": module.test_confusion, "class_names": list(dm.spec.class_names),
        "run_test": (recorded or {}).get("target", {}).get("test"),
    }


def _recorded(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None:
        return None
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and results.get("status") == "ok" else None


def eval_lines(out: dict[str, Any]) -> list[str]:
    test = out["test"]
    lines = [f"eval {out['checkpoint']} (epoch {out['epoch']})",
             f"  target  {out['dataset']:<14} test acc {100 * test.get('test/acc', float('nan')):5.1f}%   "
             f"macro-F1 {100 * test.get('test/f1', float('nan')):5.1f}%   (n={out['n_test']})"]
    run_test = out.get("run_test") or {}
    if "test/acc" in run_test and "test/acc" in test:
        delta = test["test/acc"] - run_test["test/acc"]
        lines.append(f"  run     results.json test acc {100 * run_test['test/acc']:5.1f}%   "
                     f"(difference {delta:+.4f})")
    return lines
