"""Give the pre-optimisation tree (45996c2) the bench's hooks, and nothing that changes its speed.

How the "before" column of README's Performance section was measured:

    git worktree add /tmp/before 45996c2
    python docs/bench/before_shim.py /tmp/before
    cd /tmp/before && PYTHONPATH=$PWD/src python scripts/bench.py --out /tmp/bench_before/bench.json

It adds the timing callback (results.json timing), pipeline.stage_trainer and
TransferModule.make_optimizer (plain AdamW, as that tree trained), and copies this tree's
scripts/bench.py and src/xfer/perf.py.
"""
import shutil
import sys
from pathlib import Path

root = sys.argv[1]
repo = Path(__file__).resolve().parents[2]
def edit(path, old, new):
    p = f"{root}/{path}"; s = open(p).read()
    assert old in s, (path, old[:60]); open(p, "w").write(s.replace(old, new, 1))
# StageTimer from the final build.py, verbatim
final = (repo / "src/xfer/build.py").read_text()
timer = final[final.index("class StageTimer(Callback):"):final.index("def trainer(")]
edit("src/xfer/build.py", "from functools import partial", "import time\nfrom functools import partial")
edit("src/xfer/build.py", "def trainer(cfg", timer + "def trainer(cfg")
edit("src/xfer/build.py", "        EpochSeed(int(cfg.seed)),\n", "        EpochSeed(int(cfg.seed)),\n        StageTimer(),\n")
# pipeline: stage_trainer, timing in results.json
edit("src/xfer/pipeline.py", '''    start = time.perf_counter()
    if cfg.callbacks.checkpoint.get("save_last") and not cfg.trainer.get("fast_dev_run"):
        callbacks = [*callbacks, LastEveryEpoch(run_dir / "checkpoints" / stage)]  # resume loses <= 1 epoch
    trainer = build.trainer(cfg, run_dir, stage, callbacks, **trainer_overrides)''', '''    start = time.perf_counter()
    trainer = stage_trainer(cfg, run_dir, stage, callbacks, **trainer_overrides)''')
edit("src/xfer/pipeline.py", "def fit_and_test(", '''def stage_trainer(cfg, run_dir, stage, callbacks, **trainer_overrides):
    if cfg.callbacks.checkpoint.get("save_last") and not cfg.trainer.get("fast_dev_run"):
        callbacks = [*callbacks, LastEveryEpoch(run_dir / "checkpoints" / stage)]
    return build.trainer(cfg, run_dir, stage, callbacks, **trainer_overrides)


def fit_and_test(''')
edit("src/xfer/pipeline.py", "    return StageResult(dict(tested[0]), time.perf_counter() - start, best_val), trainer",
     "    return StageResult(dict(tested[0]), time.perf_counter() - start, best_val,\n"
     "                       {'timing': build.stage_timing(trainer)}), trainer")
edit("src/xfer/pipeline.py", '"trained_in": str(run_dir)}', '"trained_in": str(run_dir), "timing": result.extra["timing"]}')
edit("src/xfer/pipeline.py", '"wall_s": target.wall_s, ', '"wall_s": target.wall_s, "timing": target.extra["timing"], ')
edit("src/xfer/pipeline.py", '"test": source.meta["test"], ', '"test": source.meta["test"], "timing": None if source.cached else source.meta.get("timing"), ')
edit("src/xfer/pipeline.py", '        "wall_s": time.perf_counter() - started,', '        "started_unix": started_unix,\n        "wall_s": time.perf_counter() - started,')
edit("src/xfer/pipeline.py", "    started = time.perf_counter()", "    started, started_unix = time.perf_counter(), time.time()")
# module: make_optimizer (plain AdamW, as this tree trained)
edit("src/xfer/models/module.py", '''    def configure_optimizers(self):
        groups = self.param_groups_fn(self)''', '''    def configure_optimizers(self):
        optimizer, scheduler = self.make_optimizer(int(self.trainer.estimated_stepping_batches))
        if self.optim["schedule"] == "plateau":
            config = {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss",
                      "reduce_on_plateau": True, "strict": True}
        else:
            config = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": config}

    def make_optimizer(self, total_steps):
        total = total_steps
        groups = self.param_groups_fn(self)''')
edit("src/xfer/models/module.py", "        total = int(self.trainer.estimated_stepping_batches)\n", "")
edit("src/xfer/models/module.py", '''        if o["schedule"] == "plateau":
            config = {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss",
                      "reduce_on_plateau": True, "strict": True}
        else:
            config = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": config}''', "        return optimizer, scheduler")
for f in ("scripts/bench.py", "src/xfer/perf.py"):
    shutil.copy(repo / f, f"{root}/{f}")
print("shimmed", root)
