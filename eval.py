"""Test a saved target model again: python eval.py ckpt_path=<run>/checkpoints/target/best.ckpt

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
import sys
from pathlib import Path

OPTIONS = ("ckpt_path", "run", "config", "out", "threads")


def parse(argv: list[str]) -> dict[str, str]:
    from xfer.schema import ConfigError

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


def main(argv: list[str]) -> int:
    import logging
    import warnings

    from xfer.cli import input_errors, one_line, user_errors
    from xfer.schema import ConfigError

    try:
        opts = parse(argv)
    except ConfigError as err:  # before the heavy imports: a typo answers at once
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    for name in ("pytorch_lightning", "lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (UserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    try:
        import torch

        if "threads" in opts:
            torch.set_num_threads(int(opts["threads"]))
        from xfer.evaluate import eval_lines, evaluate
        from xfer.io import atomic_write_json

        out = evaluate(opts["ckpt_path"], opts.get("config"))
        print("\n".join(eval_lines(out)))
        if opts.get("out"):
            atomic_write_json(opts["out"], out)
        return 0
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - one line for what the user can fix, a traceback otherwise
        if not isinstance(err, user_errors() + input_errors()):
            import traceback

            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, input_errors()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
