"""Give the pre-optimisation tree (45996c2) the bench's hooks, and nothing that changes its speed.

How the "before" column of README's Performance section was measured:

    git worktree add /tmp/before 45996c2
    python docs/bench/before_shim.py /tmp/before
    cd /tmp/before && PYTHONPATH=$PWD/src python scripts/bench.py --out /tmp/bench_before/bench.json

It adds the timing callback (results.json timing), moves the per-epoch last.ckpt callback into
build.trainer (where scripts/bench.py expects it; that tree still also writes last.ckpt from the
best-checkpoint callback, as it did), adds TransferModule.make_optimizer (this tree's, without the
fused kernel, which that tree did not use), and copies this tree's scripts/bench.py and
src/xfer/perf.py. The code it adds is taken from this tree's files, not restated here.
"""
import shutil
import sys
from pathlib import Path

root = Path(sys.argv[1])
repo = Path(__file__).resolve().parents[2]


def edit(path: str, old: str, new: str) -> None:
    p = root / path
    s = p.read_text()
    assert old in s, (path, old[:60])
    p.write_text(s.replace(old, new, 1))


def between(path: str, start: str, end: str | None = None) -> str:
    """This tree's text of ``path`` from ``start`` up to ``end`` (or the end of the file)."""
    s = (repo / path).read_text()
    i = s.index(start)
    return s[i:s.index(end, i)] if end else s[i:]


# build.py: StageTimer and stage_timing (this tree's), the timer among the callbacks, last.ckpt callback
edit("src/xfer/build.py", "from functools import partial", "import time\nfrom functools import partial")
edit("src/xfer/build.py", "def trainer(cfg", between("src/xfer/build.py", "class StageTimer(Callback):", "def trainer(") + "def trainer(cfg")
edit("src/xfer/build.py", "        EpochSeed(int(cfg.seed)),\n", "        EpochSeed(int(cfg.seed)),\n        StageTimer(),\n")
edit("src/xfer/build.py", "            **overrides: Any) -> pl.Trainer:\n", '''            **overrides: Any) -> pl.Trainer:
    from xfer.evaluate import LastEveryEpoch

    if cfg.callbacks.checkpoint.get("save_last") and not cfg.trainer.get("fast_dev_run"):
        callbacks = [*callbacks, LastEveryEpoch(run_dir / "checkpoints" / stage)]
''')
# pipeline.py: the last.ckpt callback now comes from build.trainer; timing in results.json
edit("src/xfer/pipeline.py", '''    if cfg.callbacks.checkpoint.get("save_last") and not cfg.trainer.get("fast_dev_run"):
        callbacks = [*callbacks, LastEveryEpoch(run_dir / "checkpoints" / stage)]  # resume loses <= 1 epoch
''', "")
edit("src/xfer/pipeline.py", "    return StageResult(dict(tested[0]), time.perf_counter() - start, best_val), trainer",
     "    return StageResult(dict(tested[0]), time.perf_counter() - start, best_val,\n"
     "                       {'timing': build.stage_timing(trainer)}), trainer")
edit("src/xfer/pipeline.py", '"trained_in": str(run_dir)}', '"trained_in": str(run_dir), "timing": result.extra["timing"]}')
edit("src/xfer/pipeline.py", '"wall_s": target.wall_s, ', '"wall_s": target.wall_s, "timing": target.extra["timing"], ')
edit("src/xfer/pipeline.py", '"test": source.meta["test"], ',
     '"test": source.meta["test"], "timing": None if source.cached else source.meta.get("timing"), ')
edit("src/xfer/pipeline.py", '        "wall_s": time.perf_counter() - started,',
     '        "started_unix": started_unix,\n        "wall_s": time.perf_counter() - started,')
edit("src/xfer/pipeline.py", "    started = time.perf_counter()", "    started, started_unix = time.perf_counter(), time.time()")
# module.py: this tree's configure_optimizers and make_optimizer, without the fused kernel
old = (root / "src/xfer/models/module.py").read_text()
ours = between("src/xfer/models/module.py", "    def configure_optimizers(self):", "    def _fused(self)")
ours += between("src/xfer/models/module.py", "    def make_optimizer(").replace(", fused=self._fused()", "")
(root / "src/xfer/models/module.py").write_text(old[:old.index("    def configure_optimizers(self):")] + ours)
for f in ("scripts/bench.py", "src/xfer/perf.py"):
    shutil.copy(repo / f, root / f)
print("shimmed", root)
