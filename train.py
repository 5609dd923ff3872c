"""xfer: python train.py experiment=img2txt [overrides]  (see README.md)."""
import sys

from xfer.cli import check_choices, expand_resume, one_line_hydra_errors, register_resolvers
from xfer.schema import ConfigError

register_resolvers()
try:
    # resume=<run folder>: that run's overrides, then these
    sys.argv = [sys.argv[0], *expand_resume(sys.argv[1:])]
except ConfigError as _err:
    print(f"error: {_err}", file=sys.stderr)
    sys.exit(2)
_bad = check_choices(sys.argv[1:])
if _bad:
    print(f"error: {_bad}", file=sys.stderr)
    sys.exit(2)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from xfer.cli import guarded
    from xfer.pipeline import global_rank, run, summary_lines

    def task(c: DictConfig):
        results = run(c)
        if global_rank() == 0:  # under multi-process DDP every rank runs this
            print("\n".join(summary_lines(results)))
        return results

    return guarded(task, cfg)


if __name__ == "__main__":
    with one_line_hydra_errors():
        main()
