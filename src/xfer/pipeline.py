"""One run: the source stage (cached, when enabled), then the target stage, then results.json."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from xfer import build, machine, predictions, results
from xfer.analysis import similarity
from xfer.callbacks import WeightDrift
from xfer.freezing.groups import count_trained
from xfer.models.ecosystem import describe_trunk
from xfer.resume import find_resume
from xfer.runtime import global_rank, job_threads
from xfer.schema import validate
from xfer.source_stage import run_source_stage
from xfer.stage import fit_and_test
from xfer.sweep_resume import earlier_attempt
from xfer.target_stage import best_predictions, best_val_accuracy, build_target, seeded_trunk


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run both stages for one config; write results.json into the run folder and return it."""
    validate(cfg)  # one-line ConfigError for a bad key or value, before anything loads or trains
    done = earlier_attempt(cfg, Path(cfg.paths.output_dir), global_rank())
    if done is not None:  # a resumed sweep's job that had finished: its recorded results, not retrained
        return done
    machine.check(cfg)  # the accelerator asked for, a writable trunk cache: one line, before anything trains
    started, started_unix = time.perf_counter(), time.time()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = job_threads(cfg.get("threads"))
    if threads:
        torch.set_num_threads(threads)

    freezing = build.freezing(cfg.strategy, results.freezing_name(cfg))
    # the target stage's trunk: built once, checked before anything loads or trains (a weights file that
    # cannot be had fails here, before the data is read)
    trunk, rng = seeded_trunk(cfg)
    freezing.validate(len(trunk.blocks))
    target_dm = build.datamodule(cfg.target, cfg.seed)
    with torch.random.fork_rng(devices=[]):  # the target adapter fits the target data: checked before anything trains
        build.adapter_and_head(target_dm.spec, trunk, cfg.target_adapter, cfg.head)
    # resume= / ckpt_path=: the earlier run's checkpoint, checked and copied into this run's folder
    resume = find_resume(cfg, run_dir, trunk)

    # where the trunk's initial weights came from (trunk=torchvision/timm: a file, whose sha256 keys the cache)
    trunk_info = describe_trunk(trunk)
    source = run_source_stage(cfg, run_dir, trunk_info["sha256"]) if cfg.source_stage.enabled else None

    module, dm, parts = build_target(cfg, freezing, target_dm, None if source is None else source.state, (trunk, rng))
    if resume is not None:
        resume.check_fits(module)
    # how far each trunk block moves from the weights the stage starts from (taken now, before a resume loads)
    drift = WeightDrift(module.trunk) if OmegaConf.select(cfg, "analysis.drift", default=True) else None
    initial_trunk = similarity.snapshot(cfg, module.trunk)  # for the CKA of start vs end, per block
    target, trainer = fit_and_test(cfg, module, dm, run_dir, "target",
                                   [*build.freezing_callbacks(freezing, parts.optim), *([drift] if drift else [])],
                                   ckpt_path=None if resume is None else str(resume.ckpt_path))
    # per-example predictions for the summary's paired statistics (rank 0 alone writes files)
    preds = None if trainer.fast_dev_run or global_rank() != 0 else best_predictions(cfg, module, target_dm, trainer)
    best_val, best_val_from = best_val_accuracy(cfg, target.best_val, preds)
    # representation similarity per block, with the best checkpoint's weights (best_predictions loaded them)
    cka = None if preds is None or initial_trunk is None else similarity.measure(
        cfg, run_dir, module, target_dm, initial_trunk, None if source is None else source.state, parts.source_data,
        trainer.loggers, trainer.global_step)

    out = results.finished(
        cfg, strategy=freezing.describe(), trunk=trunk_info,
        source=None if source is None else source.describe(),
        target={
            "dataset": cfg.target.name, "test": target.test, "best_val": best_val, "best_val_from": best_val_from,
            "wall_s": target.wall_s, "timing": target.extra["timing"], "sizes": target_dm.sizes(),
            "dropped": target_dm.dropped, "groups": target_dm.group_counts,
            "read_from": target_dm.read_from,  # "cache": the reader's output kept by an earlier run (read_cache)
            "encoded_from": target_dm.encoded_from,  # "cache": tokenizer and ids kept by an earlier run (encode_cache)
            "rendering": target_dm.rendering,  # text as pixels: what was cut, what had no glyph
            "drift": drift.summary() if drift is not None and drift.history else None,
            "similarity": cka,
            "test_ids": target_dm.fingerprint("test"),
            "predictions_acc": None if preds is None or "test_pred" not in preds else predictions.accuracy(preds, "test"),
            "class_names": list(target_dm.spec.class_names), "confusion_matrix": module.test_confusion,
        },
        params=count_trained(module, freezing, parts.optim, int(cfg.trainer.max_epochs)),
        predictions=None if preds is None else predictions.FILE, source_norm_stats=parts.norm_stats_source,
        resumed_from=None if resume is None else resume.describe(), threads=torch.get_num_threads(),
        started=started, started_unix=started_unix)
    if global_rank() == 0:  # under multi-process DDP every rank runs this function
        if preds is not None:  # before results.json: a run with results.json is complete
            predictions.save(run_dir / predictions.FILE, preds)
        results.write(run_dir, out)
        results.log_hparams(trainer, cfg, out)
    return out
