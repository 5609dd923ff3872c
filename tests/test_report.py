"""The summarizer on hand-made results.json files: groups, statistics, the winner and every plot."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from xfer.report import summarize, write_summary


def _run(folder: Path, name: str, seed: int, acc: float, fraction: float = 1.0, **settings) -> None:
    run_dir = folder / f"{name}_{'_'.join(f'{k}{v}' for k, v in settings.items())}_f{fraction}_s{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({
        "status": "ok", "strategy": {"name": name, "bn_policy": "frozen", **settings}, "seed": seed,
        "fraction": fraction, "samples_per_class": None, "run_dir": str(run_dir),
        "target": {"test": {"test/acc": acc}},
    }))


def test_layer_sweep_gives_one_curve_per_strategy(tmp_path: Path):
    for k in range(3):
        for seed in range(2):
            _run(tmp_path, "freeze_first_k", seed, 0.6 + 0.05 * k + 0.01 * seed, k=k, reinit_rest=True)
            _run(tmp_path, "transfer_first_k", seed, 0.7 + 0.01 * seed, k=k, reinit_rest=True)
    s = write_summary(tmp_path)
    labels = {g.strategy for g in s.groups}
    assert "freeze_first_k(k=2)" in labels and "transfer_first_k(k=0)" in labels
    assert (tmp_path / "layer_transfer.png").stat().st_size > 1000
    best = s.comparisons[1.0]
    assert best["winner"] == "freeze_first_k(k=2)" and best["mean"] == pytest.approx(0.705)


def test_fraction_sweep_plots_accuracy_against_data_and_tests_each_size(tmp_path: Path):
    for fraction in (0.1, 0.5, 1.0):
        for seed in range(3):
            _run(tmp_path, "scratch", seed, 0.5 + 0.2 * fraction + 0.001 * seed, fraction)
            _run(tmp_path, "finetune", seed, 0.55 + 0.2 * fraction + 0.002 * seed, fraction)
    s = write_summary(tmp_path)
    assert (tmp_path / "accuracy_by_fraction.png").stat().st_size > 1000
    assert set(s.comparisons) == {0.1, 0.5, 1.0}
    for verdict in s.comparisons.values():  # +5 points on every seed: a clear, significant lead
        assert verdict["winner"] == "finetune" and verdict["significant"]
        assert verdict["lead"] == pytest.approx(0.05 + 0.001, abs=0.002)
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 6


def test_failed_and_unreadable_runs_are_listed_not_trusted(tmp_path: Path):
    _run(tmp_path, "scratch", 0, 0.6)
    bad = tmp_path / "half_written"
    bad.mkdir()
    (bad / "results.json").write_text('{"status": "ok", "target": ')  # a torn write
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "results.json").write_text(json.dumps({"status": "failed", "error": "strategy.k=9; allowed: 0..4",
                                                     "strategy": {"name": "freeze_first_k"}, "seed": 1}))
    s = summarize(tmp_path)
    assert [g.n for g in s.groups] == [1]
    assert any("half_written" in p for p in s.incomplete)
    assert s.failed[0]["error"].startswith("strategy.k=9")
