"""Compare strategies with an equal tuning budget: tune each one's learning rates on validation with the
same number of Optuna trials, then run the chosen settings over seeds and summarise.

    python scripts/tune.py experiment=img2txt                      # make tune
    python scripts/tune.py experiment=img2txt --strategies scratch,linear_probe,finetune --trials 12
    python scripts/tune.py experiment=img2img --seeds 0,1,2,3,4 hydra/launcher=joblib hydra.launcher.n_jobs=2

Protocol (what makes the comparison fair and the test split clean):
- every strategy gets the same number of trials, the same TPE sampler seed and the same log-uniform
  range for each lr it uses: ``optim.lr`` (adapter and head) always; ``optim.trunk_lr`` when its plan
  trains the trunk at that lr; ``strategy.trunk_lr`` for scratch's random trunk. A frozen trunk
  (linear_probe, frozen_random) has no trunk lr to tune;
- a trial is one run at ``--tune-seed`` (default 1000, disjoint from the final seeds), scored by its
  best validation accuracy, with ``eval_test=false``: no trial ever evaluates the test split;
- the split (``target.split_seed``) is the final runs' split, so the examples tuning sees are only
  training and validation examples of the runs it chooses for;
- the final runs (``--seeds``) use the chosen lrs and go to ``<out>/final``; its summary compares every
  strategy with scratch, paired by seed, Holm-corrected. ``<out>/tuned.md`` lists every choice.
Other arguments are Hydra overrides passed to every run (trials and final runs alike).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STRATEGIES = "scratch,frozen_random,linear_probe,finetune,gradual_unfreeze,lp_ft,layerwise_lr"
LR_RANGE = (1e-4, 1e-2)  # one range for every lr dimension of every strategy


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import xfer  # noqa: F401 - registers the configs' resolvers

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return hydra_compose(config_name="train", overrides=overrides)


def search_space(overrides: list[str], strategy: str) -> list[str]:
    """The lr settings this strategy uses, read off its own plan: a setting is tuned when changing it
    changes what the strategy trains at some epoch."""
    from hydra.utils import instantiate

    from xfer import build

    cfg = compose([*overrides, f"strategy={strategy}"])
    strat = build.freezing(cfg.strategy, strategy)
    n_blocks = len(instantiate(cfg.trunk).blocks)
    epochs = range(int(cfg.trainer.max_epochs))

    def plans(lr: float, trunk_lr: float, own: float | None) -> list[Any]:
        if own is not None:
            strat.trunk_lr = own
        return [strat.plan(e, n_blocks, lr, trunk_lr) for e in epochs]

    dims = ["optim.lr"]
    base = plans(1e-3, 2e-3, None)
    if plans(1e-3, 5e-3, None) != base:
        dims.append("optim.trunk_lr")
    if hasattr(strat, "trunk_lr") and plans(1e-3, 2e-3, 7e-3) != base:
        dims.append("strategy.trunk_lr")
    return dims


def run_train(args: list[str], log: Path) -> int:
    with open(log, "a") as fh:
        return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, stdout=fh,
                              stderr=subprocess.STDOUT).returncode


def tune(strategy: str, dims: list[str], overrides: list[str], out: Path, trials: int, tune_seed: int,
         sampler_seed: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed),
                                study_name=f"tune_{strategy}")
    folder = out / "tune" / strategy
    folder.mkdir(parents=True, exist_ok=True)
    history = []
    for k in range(trials):
        trial = study.ask()
        values = {d: trial.suggest_float(d, *LR_RANGE, log=True) for d in dims}
        run_dir = folder / f"trial_{k:03d}"
        code = run_train([*overrides, f"strategy={strategy}", f"seed={tune_seed}", "eval_test=false",
                          *(f"{d}={v:.6g}" for d, v in values.items()), f"hydra.run.dir={run_dir}"],
                         folder / "trials.log")
        score = math.nan
        try:
            result = json.loads((run_dir / "results.json").read_text())
            if result.get("status") == "ok" and result["target"].get("best_val") is not None:
                score = float(result["target"]["best_val"])
        except (OSError, ValueError, KeyError):
            pass
        if math.isnan(score):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, score)
        history.append({"trial": k, **values, "best_val": score, "exit": code})
        print(f"  {strategy} trial {k + 1}/{trials}: " + " ".join(f"{d}={v:.3g}" for d, v in values.items())
              + f" -> val {'failed' if math.isnan(score) else f'{100 * score:.2f}%'}", flush=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise SystemExit(f"error: every trial of {strategy} failed; see {folder / 'trials.log'}")
    best = study.best_trial
    (folder / "trials.json").write_text(json.dumps(history, indent=2) + "\n")
    return {"strategy": strategy, "dims": dims, "params": {d: float(f"{best.params[d]:.6g}") for d in dims},
            "best_val": best.value, "trials": trials, "completed": len(done)}


def tuned_markdown(chosen: list[dict[str, Any]], args: argparse.Namespace, overrides: list[str]) -> str:
    lines = ["# Tuned settings", "",
             f"Each strategy: {args.trials} Optuna TPE trials (sampler seed {args.sampler_seed}), every lr "
             f"log-uniform in [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}], scored by best validation accuracy at "
             f"seed={args.tune_seed} with eval_test=false (no trial evaluated the test split).", "",
             f"Overrides: `{' '.join(overrides) or '(none)'}`", "",
             "| strategy | tuned | completed trials | best val | chosen |", "|---|---|---:|---:|---|"]
    for c in chosen:
        lines.append(f"| {c['strategy']} | {', '.join(c['dims'])} | {c['completed']}/{c['trials']} | "
                     f"{100 * c['best_val']:.2f}% | {' '.join(f'{k}={v:g}' for k, v in c['params'].items())} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other arguments: Hydra overrides.")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES, help=f"comma-separated (default {DEFAULT_STRATEGIES})")
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials per strategy (default 20)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the final runs (default 0,1,2,3,4)")
    parser.add_argument("--tune-seed", type=int, default=1000, help="the trials' seed (default 1000)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default logs/tune/<stamp>)")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") or "=" not in o]
    if bad:
        parser.error(f"unknown argument {bad[0]}; allowed: the options above, or Hydra overrides key=value")
    taken = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in ("strategy", "seed", "eval_test")]
    if taken:
        parser.error(f"{taken[0]}: tune.py sets strategy, seed and eval_test itself; use --strategies / --seeds")
    if args.trials < 1:
        parser.error(f"--trials={args.trials}; allowed: an integer >= 1")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds={args.seeds}; allowed: comma-separated integers such as 0,1,2,3,4")
    if args.tune_seed in seeds:
        parser.error(f"--tune-seed={args.tune_seed} is also a final seed; allowed: a seed outside {seeds}")
    try:
        import optuna  # noqa: F401
    except ImportError:
        print("error: scripts/tune.py needs optuna; pip install -e '.[optuna]'", file=sys.stderr)
        return 2
    from xfer.argv import config_groups

    strategies = [s for s in args.strategies.split(",") if s]
    known = config_groups()["strategy"]
    unknown = [s for s in strategies if s not in known]
    if unknown:
        print(f"error: --strategies has {unknown[0]!r}; allowed: {', '.join(known)}", file=sys.stderr)
        return 2
    home = Path(os.environ.get("XFER_HOME", "."))
    out = args.out or home / "logs" / "tune" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if (out / "tuned.json").exists():
        print(f"error: {out} already holds a finished tuning (tuned.json); choose another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    try:
        spaces = {s: search_space(overrides, s) for s in strategies}
    except Exception as err:  # noqa: BLE001 - a bad override: one line, as train.py would say it
        from xfer.failure import one_line

        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2

    print(f"tuning {len(strategies)} strategies x {args.trials} trials into {out}", flush=True)
    chosen = []
    for s in strategies:
        chosen.append(tune(s, spaces[s], overrides, out, args.trials, args.tune_seed, args.sampler_seed))
    (out / "tuned.json").write_text(json.dumps(chosen, indent=2) + "\n")
    (out / "tuned.md").write_text(tuned_markdown(chosen, args, overrides))

    final = out / "final"
    print(f"final runs: {len(strategies)} strategies x seeds {args.seeds} into {final}", flush=True)
    for c in chosen:
        code = run_train(["-m", *overrides, f"strategy={c['strategy']}", f"seed={args.seeds}",
                          *(f"{k}={v:g}" for k, v in c["params"].items()), f"hydra.sweep.dir={final}",
                          f"hydra.sweep.subdir={c['strategy']}_s${{seed}}"], out / "final.log")
        if code != 0:
            print(f"error: the final runs of {c['strategy']} failed (exit {code}); see {out / 'final.log'}",
                  file=sys.stderr)
            return 1
    from xfer.report import ReportError, write_summary

    try:
        write_summary(final)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((out / "tuned.md").read_text())
    print((final / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
