"""The sweep summary on hand-made run folders: the statistics, the protocol (winner on validation,
every group against the reference, Holm over all comparisons), every guard, and every plot."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from xfer.report import ReportError, collect, summarize, write_summary
from xfer.report import stats
from xfer.report.plots import runs_by_size
from xfer.report.summary import transfer_gain

ROOT = Path(__file__).resolve().parents[1]


def _run(folder: Path, name: str, seed: int, acc: float, fraction: float = 1.0, *, val: float | None = None,
         split_seed: int | None = None, experiment: str | None = None, started: float = 0.0,
         preds: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, test_ids: str | None = None,
         tag: str = "", f1: float | None = None, n_train: int | None = None, **settings) -> Path:
    """One ok run's folder with results.json (and predictions.npz from (index, label, pred))."""
    extra = "_".join(f"{k}{v}" for k, v in settings.items())
    run_dir = folder / f"{experiment or 'x'}_{name}_{extra}_f{fraction}_s{seed}_ss{split_seed}{tag}"
    run_dir.mkdir(parents=True)
    results = {
        "status": "ok", "strategy": {"name": name, "bn_policy": "frozen", **settings}, "seed": seed,
        "fraction": fraction, "samples_per_class": None, "run_dir": str(run_dir), "started_unix": started,
        "target": {"test": {"test/acc": acc}, "best_val": acc if val is None else val},
    }
    if f1 is not None:
        results["target"]["test"]["test/f1"] = f1
    if n_train is not None:
        results["target"]["sizes"] = {"train": n_train, "val": 100, "test": 400}
    if split_seed is not None:
        results["split_seed"] = split_seed
    if experiment is not None:
        results["experiment"] = experiment
    if test_ids is not None:
        results["target"]["test_ids"] = test_ids
    if preds is not None:
        index, label, pred = preds
        arrays = {}
        for split in ("val", "test"):
            arrays.update({f"{split}_index": index.astype(np.int64), f"{split}_label": label.astype(np.int64),
                           f"{split}_pred": pred.astype(np.int64),
                           f"{split}_prob": np.eye(int(label.max()) + 1, dtype=np.float32)[pred]})
        np.savez(run_dir / "predictions.npz", **arrays)
        results["predictions"] = "predictions.npz"
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def _failed(folder: Path, name: str, seed: int, error: str, fraction: float = 1.0) -> Path:
    run_dir = folder / f"failed_{name}_s{seed}_f{fraction}"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({
        "status": "failed", "error": error, "strategy": {"name": name}, "seed": seed, "fraction": fraction,
        "samples_per_class": None, "run_dir": str(run_dir)}))
    return run_dir


def _preds(rng: np.random.Generator, n: int, acc: float, labels: np.ndarray | None = None):
    """(index, label, pred) for a binary task where each example is right with probability acc."""
    label = rng.integers(0, 2, n) if labels is None else labels
    right = rng.random(n) < acc
    return np.arange(n), label, np.where(right, label, 1 - label)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _by_label(s) -> dict:
    return {c.group.strategy: c for c in s.comparisons}


# -- the statistics ---------------------------------------------------------------------------------
def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005*5=0.025, 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> 0.09 (monotone), 0.2*1 -> 0.2
    got = stats.holm([0.01, 0.04, None, 0.03, 0.005, 0.2, float("nan")])
    assert got[2] is None and got[6] is None
    assert got[:2] + got[3:6] == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.2])
    assert stats.holm([0.02, 0.3]) == [0.04, 0.3] and stats.holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1


def test_paired_difference_has_no_nan_and_no_false_zero_p():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = stats.paired_difference([0.7, 0.71, 0.69], [0.7, 0.71, 0.69])
        const = stats.paired_difference([0.72, 0.73, 0.71], [0.70, 0.71, 0.69])
        one = stats.paired_difference([0.72], [0.70])
    assert (same.mean, same.ci_low, same.ci_high, same.p) == (0.0, 0.0, 0.0, 1.0)
    # a constant +2 points: the t statistic is infinite, but with 3 units only 2 of the 8 sign flips are
    # as extreme as what we saw, so p = 0.25, never 0
    assert const.p == pytest.approx(0.25) and const.test.startswith("exact sign-flip") and const.ci_low is None
    assert one.p is None and one.sd is None
    real = stats.paired_difference([0.72, 0.74, 0.71, 0.75], [0.70, 0.71, 0.70, 0.72])
    assert real.test == "paired t" and 0 < real.p < 0.05 and real.ci_low < real.mean < real.ci_high
    assert real.p_sign_flip == pytest.approx(2 / 16) and real.d_z == pytest.approx(real.mean / real.sd)
    assert stats.sign_flip_p([1.0, 2.0, 3.0]) == 0.25 and stats.sign_flip_p([1.0, -1.0, 2.0, 3.0]) == 0.375


def test_seeds_needed_follow_the_design_rule_of_thumb_and_alpha_over_m():
    # DESIGN.md: a 1.2-point spread needs about 6 seeds for 2 points and 14 for 1 point (alpha 0.05)
    assert stats.seeds_needed(0.012, 0.02) == 6 and stats.seeds_needed(0.012, 0.01) == 14
    n = np.arange(2, 200)
    exact = int(n[np.argmax(stats.paired_t_power(n, 0.01, 0.012, 0.01) >= 0.8)])
    assert stats.seeds_needed(0.012, 0.01, alpha=0.05 / 5) == exact > 14
    assert stats.seeds_needed(0.5, 0.01) == ">1000" and stats.seeds_needed(0.0, 0.01) is None


def test_bootstrap_ci_covers_a_large_effect_and_is_reproducible():
    rng = np.random.default_rng(3)
    units = []
    for _ in range(5):
        _, label, pa = _preds(rng, 1300, 0.80)
        correct_a = pa == label
        correct_b = correct_a & (rng.random(1300) < 0.85)  # b loses ~12 points, paired on the examples
        units.append((label, correct_a, correct_b))
    true = np.mean([a.mean() - b.mean() for _, a, b in units])
    low, high = stats.bootstrap_diff(units, n_boot=2000, seed=0)
    assert low < true < high and low > 0.08
    assert stats.bootstrap_diff(units, n_boot=2000, seed=0) == (low, high)
    assert stats.bootstrap_diff(units, n_boot=2000, seed=1) != (low, high)


def test_bootstrap_shortcut_matches_resampling_example_indices():
    """bootstrap_diff draws per-class counts instead of example indices; a direct two-level resampling
    (units, then examples within class, the same indices for both strategies) must give the same CI."""
    rng = np.random.default_rng(11)
    units = []
    for acc in (0.6, 0.7, 0.65):
        label = rng.integers(0, 3, 300)
        correct_a = rng.random(300) < acc
        units.append((label, correct_a, correct_a ^ (rng.random(300) < 0.2)))
    reps = []
    for _ in range(4000):
        total = 0.0
        for u in rng.integers(0, len(units), len(units)):
            label, ca, cb = units[u]
            idx = np.concatenate([rng.choice(np.flatnonzero(label == c), np.sum(label == c)) for c in range(3)])
            total += ca[idx].mean() - cb[idx].mean()
        reps.append(total / len(units))
    direct = np.percentile(reps, [2.5, 97.5])
    assert stats.bootstrap_diff(units, n_boot=4000, seed=0) == pytest.approx(tuple(direct), abs=0.006)


def test_mcnemar_exact_counts_only_the_discordant_examples():
    a = np.array([1, 1, 1, 1, 1, 0, 1, 0], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 1, 0], bool)  # a alone right on 5, b alone on none: p = 2/32
    assert stats.mcnemar_exact(a, b) == pytest.approx(2 / 32)
    assert stats.mcnemar_exact(a, a) == 1.0


# -- the protocol -----------------------------------------------------------------------------------
def _null_sweeps(root: Path, sweeps: int, strategies: int, seeds: int, rng: np.random.Generator) -> float:
    """Share of simulated sweeps, every strategy equal, in which the summary claims any difference."""
    names = ["scratch"] + [f"s{i}" for i in range(1, strategies)]
    claims = 0
    for i in range(sweeps):
        folder = root / f"{strategies}x{seeds}_{i}"
        seed_effect = rng.normal(0, 0.01, seeds)  # a good seed helps every strategy: paired seeds
        for name in names:
            for seed in range(seeds):
                acc = 0.70 + seed_effect[seed] + rng.normal(0, 0.012)
                _run(folder, name, seed, float(acc), val=float(0.70 + rng.normal(0, 0.012)))
        s = summarize(folder, bootstrap=0)
        assert len(s.comparisons) == strategies - 1
        claims += any(c.significant for c in s.comparisons)
    return claims / sweeps


def test_a_simulated_null_claims_a_difference_in_at_most_5_percent_of_sweeps(tmp_path: Path):
    """All strategies drawn from one distribution: the old summary (winner on test, one uncorrected
    t-test) claimed a significant lead in 5.8-13.8% of such sweeps; Holm over every comparison must keep
    the family-wise rate at 5%."""
    rng = np.random.default_rng(2024)
    assert _null_sweeps(tmp_path, 200, 6, 3, rng) <= 0.05
    assert _null_sweeps(tmp_path, 100, 13, 3, rng) <= 0.05
    assert _null_sweeps(tmp_path, 60, 6, 10, rng) <= 0.05


def test_a_real_five_point_effect_on_five_seeds_is_detected(tmp_path: Path):
    rng = np.random.default_rng(7)
    seed_effect = rng.normal(0, 0.01, 5)
    for name, lift in (("scratch", 0.0), ("finetune", 0.05), ("linear_probe", 0.0), ("lp_ft", 0.0)):
        for seed in range(5):
            _run(tmp_path, name, seed, float(0.65 + lift + seed_effect[seed] + rng.normal(0, 0.01)))
    s = write_summary(tmp_path, plots=False, bootstrap=0)
    cmp = _by_label(s)
    assert cmp["finetune"].significant and cmp["finetune"].diff.mean == pytest.approx(0.05, abs=0.02)
    assert not cmp["linear_probe"].significant and not cmp["lp_ft"].significant
    assert s.winners[1.0].group.strategy == "finetune"


def test_the_winner_is_chosen_on_validation_not_test(tmp_path: Path):
    for seed in range(3):
        _run(tmp_path, "scratch", seed, 0.60, val=0.61 + 0.001 * seed)
        _run(tmp_path, "finetune", seed, 0.70 + 0.001 * seed, val=0.62)  # best on test, second on val
        _run(tmp_path, "linear_probe", seed, 0.65 + 0.001 * seed, val=0.66)  # best on val
    s = write_summary(tmp_path, plots=False)
    winner = s.winners[1.0].group
    assert winner.strategy == "linear_probe" and winner.mean == pytest.approx(0.651)
    md = (tmp_path / "summary.md").read_text()
    assert "Winner on validation at data=1.0: linear_probe (val 66.0%, test 65.1%, n=3)" in md


def test_identical_strategies_give_zero_difference_p_one_and_no_nan_or_warning(tmp_path: Path):
    rng = np.random.default_rng(0)
    for seed in range(3):
        preds = _preds(rng, 200, 0.7)
        acc = float(np.mean(preds[1] == preds[2]))
        for name in ("scratch", "copy"):
            _run(tmp_path, name, seed, acc, preds=preds, test_ids="abc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = write_summary(tmp_path)
    [c] = s.comparisons
    assert (c.diff.mean, c.p, c.p_holm, c.significant) == (0.0, 1.0, 1.0, False)
    assert c.boot == (0.0, 0.0)
    for name in ("summary.md", "summary.csv", "comparisons.csv"):
        assert "nan" not in (tmp_path / name).read_text().lower()


def test_a_constant_difference_is_not_called_significant(tmp_path: Path):
    """finetune is exactly 2 points above scratch on all 3 seeds: sd 0, the exact sign-flip p is 2/8."""
    for seed in range(3):
        base = 0.60 + 0.01 * seed
        _run(tmp_path, "scratch", seed, base)
        _run(tmp_path, "finetune", seed, base + 0.02)
        _run(tmp_path, "linear_probe", seed, base + 0.01 * (-1) ** seed)
    s = write_summary(tmp_path, plots=False)
    c = _by_label(s)["finetune"]
    assert c.p == pytest.approx(0.25) and c.p_holm == pytest.approx(0.5) and not c.significant
    md = (tmp_path / "summary.md").read_text()
    assert "0.25 (sign-flip)" in md and "2/2^3 = 0.25" in md


def test_a_duplicate_run_is_refused_in_one_line_or_the_newest_kept(tmp_path: Path):
    sweep, rerun = tmp_path / "sweep", tmp_path / "rerun"
    for seed in range(2):
        _run(sweep, "scratch", seed, 0.6 + 0.01 * seed, started=100.0)
        old = _run(sweep, "finetune", seed, 0.62 + 0.01 * seed, started=100.0)
    new = _run(rerun, "finetune", 1, 0.70, started=200.0)
    with pytest.raises(ReportError) as err:
        summarize([sweep, rerun])
    message = str(err.value)
    assert "\n" not in message and str(old) in message and str(new) in message and "--keep-newest" in message
    s = write_summary([sweep, rerun], keep_newest=True, plots=False)
    [g] = [g for g in s.groups if g.strategy == "finetune"]
    assert g.values[(1, 0)] == 0.70 and s.kept_newest == [(str(new), str(old))]
    assert f"dropped {old}" in (sweep / "summary.md").read_text()

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), str(sweep), str(rerun),
                           "--no-plots"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and str(old) in proc.stderr
    unknown = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), str(sweep), "--no-plots",
                              "--keep-newest", "--reference", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "nope" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1


def test_a_missing_seed_pairs_on_the_shared_units_and_says_which_were_dropped(tmp_path: Path):
    for seed in range(4):
        _run(tmp_path, "scratch", seed, 0.60 + 0.01 * seed)
        if seed != 2:
            _run(tmp_path, "finetune", seed, 0.63 + 0.01 * seed + 0.001 * seed ** 2)
    s = write_summary(tmp_path, plots=False)
    [c] = s.comparisons
    assert c.units == [(0, 0), (1, 0), (3, 0)] and c.dropped == {"scratch": [(2, 0)]}
    assert c.test == "paired t"
    md = (tmp_path / "summary.md").read_text()
    assert "paired on the 3 shared units; dropped seed 2 (scratch only)" in md
    [row] = _csv(tmp_path / "comparisons.csv")
    assert row["n_pairs"] == "3" and row["dropped_units"] == "scratch: 2"


def test_one_unit_gets_a_descriptive_mcnemar_never_a_significant_verdict(tmp_path: Path):
    """One seed says whether two trained models differ on these examples, not whether two strategies
    do: McNemar is shown, kept out of Holm's family, and never called significant."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 800)
    ref, strong = _preds(rng, 800, 0.6, labels), _preds(rng, 800, 0.75, labels)
    for name, preds in (("scratch", ref), ("finetune", strong)):
        _run(tmp_path, name, 0, float(np.mean(preds[1] == preds[2])), preds=preds, test_ids="f00d")
    s = write_summary(tmp_path)
    [c] = s.comparisons
    assert c.n == 1 and c.mcnemar < 1e-6 and c.p is None and c.p_holm is None and not c.significant
    assert s.m == 0 and c.boot is not None and c.boot[0] > 0.08
    assert (tmp_path / "accuracy_by_strategy.png").stat().st_size > 1000
    assert (tmp_path / "difference_from_reference.png").stat().st_size > 1000
    md = (tmp_path / "summary.md").read_text()
    assert "(one unit; McNemar" in md and "n=1, no spread and no t-test" in md and "never called significant" in md


def test_runs_on_different_test_sets_are_not_compared(tmp_path: Path):
    """Pairing needs the same test examples: different test_ids leave the pair out of the comparisons
    (and Holm's family), whatever the bootstrap setting; missing predictions only lose the bootstrap."""
    rng = np.random.default_rng(1)
    for seed in range(2):
        _run(tmp_path, "scratch", seed, 0.6 + 0.01 * seed, preds=_preds(rng, 100, 0.6), test_ids="aaaa")
        _run(tmp_path, "finetune", seed, 0.61 + 0.02 * seed, preds=_preds(rng, 100, 0.6), test_ids="bbbb")
        _run(tmp_path, "linear_probe", seed, 0.62 + 0.015 * seed)
    for bootstrap in (2000, 0):
        s = write_summary(tmp_path, plots=False, bootstrap=bootstrap)
        cmp = _by_label(s)
        assert "finetune" not in cmp and s.m == 1
        assert any("finetune vs scratch" in n and "test sets differ (test_ids bbbb vs aaaa)" in n for n in s.notes)
    s = write_summary(tmp_path, plots=False)
    assert _by_label(s)["linear_probe"].boot_note == "no predictions"
    assert "No bootstrap CI (no predictions" in (tmp_path / "summary.md").read_text()


def test_units_are_seed_and_split_seed(tmp_path: Path):
    for seed in range(2):
        for split_seed in range(2):
            noise = 0.003 * seed - 0.002 * split_seed + 0.001 * seed * split_seed
            _run(tmp_path, "scratch", seed, 0.60 + 0.01 * split_seed, split_seed=split_seed)
            _run(tmp_path, "finetune", seed, 0.62 + 0.01 * split_seed + noise, split_seed=split_seed)
    s = write_summary(tmp_path, plots=False)
    assert [g.n for g in s.groups] == [4, 4]
    [c] = s.comparisons
    assert c.n == 4 and c.units == [(0, 0), (0, 1), (1, 0), (1, 1)]
    rows = {r["strategy"]: r for r in _csv(tmp_path / "summary.csv")}
    assert rows["finetune"]["seeds"] == "0/0 0/1 1/0 1/1"


def test_failed_runs_are_counted_per_group(tmp_path: Path):
    for seed in range(3):
        _run(tmp_path, "scratch", seed, 0.6 + 0.01 * seed)
        if seed < 2:
            _run(tmp_path, "finetune", seed, 0.62 + 0.01 * seed)
    _failed(tmp_path, "finetune", 2, "NonFiniteLossError: loss is nan at step 3")
    _failed(tmp_path, "lp_ft", 0, "strategy.probe_epochs=9; allowed: 0..4")
    s = write_summary(tmp_path, plots=False)
    counts = {g.strategy: (g.n, g.failed) for g in s.groups}
    assert counts == {"scratch": (3, 0), "finetune": (2, 1), "lp_ft": (0, 1)}
    rows = {r["strategy"]: r for r in _csv(tmp_path / "summary.csv")}
    assert (rows["finetune"]["n"], rows["finetune"]["failed"]) == ("2", "1")
    assert (rows["lp_ft"]["n"], rows["lp_ft"]["failed"], rows["lp_ft"]["mean"]) == ("0", "1", "")
    md = (tmp_path / "summary.md").read_text()
    assert "| finetune | 1.0 | 2 | 1 |" in md and "| lp_ft | 1.0 | 0 | 1 |" in md
    assert "## Failed jobs" in md and "loss is nan" in md


def test_no_reference_means_no_comparisons_and_says_so(tmp_path: Path):
    for seed in range(2):
        _run(tmp_path, "finetune", seed, 0.6 + 0.01 * seed)
        _run(tmp_path, "linear_probe", seed, 0.61 + 0.02 * seed)
    s = write_summary(tmp_path)
    assert s.comparisons == [] and s.winners[1.0].group.strategy == "linear_probe"
    md = (tmp_path / "summary.md").read_text()
    assert "No reference group 'scratch' at data=1.0" in md and "No comparisons" in md
    s = summarize(tmp_path, reference="finetune", bootstrap=0)
    assert [c.group.strategy for c in s.comparisons] == ["linear_probe"]
    with pytest.raises(ReportError, match="'nope' matches no group"):
        summarize(tmp_path, reference="nope")


def test_several_experiments_are_prefixed_and_the_baseline_is_compared_too(tmp_path: Path):
    """A transfer sweep merged with a separate text-baseline sweep: scratch of the experiment with more
    runs is the reference, and the baseline's scratch is one more group (a dashed line in the plot)."""
    sweep, baseline = tmp_path / "sweep", tmp_path / "baseline"
    for seed in range(3):
        _run(sweep, "scratch", seed, 0.70 + 0.004 * seed, experiment="img2txt")
        _run(sweep, "linear_probe", seed, 0.72 + 0.003 * seed ** 2, experiment="img2txt")
        _run(baseline, "scratch", seed, 0.74 + 0.005 * seed ** 2, experiment="txt_baseline")
    s = write_summary([sweep, baseline])
    assert s.references[1.0].strategy == "img2txt/scratch"
    assert set(_by_label(s)) == {"img2txt/linear_probe", "txt_baseline/scratch"}
    assert (sweep / "difference_from_reference.png").stat().st_size > 1000
    s = summarize([sweep, baseline], reference="txt_baseline/scratch", bootstrap=0)
    assert set(_by_label(s)) == {"img2txt/linear_probe", "img2txt/scratch"}


# -- the earlier behaviour, on the new API -----------------------------------------------------------
def test_layer_sweep_gives_one_curve_per_strategy(tmp_path: Path):
    for k in range(3):
        for seed in range(2):
            _run(tmp_path, "freeze_first_k", seed, 0.6 + 0.05 * k + 0.01 * seed, k=k, reinit_rest=True)
            _run(tmp_path, "transfer_first_k", seed, 0.7 + 0.01 * seed, k=k, reinit_rest=True)
    s = write_summary(tmp_path)
    labels = {g.strategy for g in s.groups}
    assert "freeze_first_k(k=2)" in labels and "transfer_first_k(k=0)" in labels
    assert (tmp_path / "layer_transfer.png").stat().st_size > 1000
    best = s.winners[1.0].group
    assert best.strategy == "freeze_first_k(k=2)" and best.mean == pytest.approx(0.705)
    assert s.comparisons == []  # no scratch in a layer sweep


def test_fraction_sweep_plots_accuracy_against_data_and_tests_each_size(tmp_path: Path):
    for fraction in (0.1, 0.5, 1.0):
        for seed in range(3):
            _run(tmp_path, "scratch", seed, 0.5 + 0.2 * fraction + 0.001 * seed, fraction)
            _run(tmp_path, "finetune", seed, 0.55 + 0.2 * fraction + 0.002 * seed, fraction)
    s = write_summary(tmp_path)
    assert (tmp_path / "accuracy_by_fraction.png").stat().st_size > 1000
    assert set(s.winners) == {0.1, 0.5, 1.0} and s.m == 3
    for c in s.comparisons:  # +5 points on every seed: a clear lead, significant after Holm
        assert s.winners[c.data].group.strategy == "finetune" and c.significant
        assert c.diff.mean == pytest.approx(0.05 + 0.001, abs=0.002)
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 1 + 6
    assert len(_csv(tmp_path / "comparisons.csv")) == 3


def test_learning_curves_get_one_panel_per_data_size(tmp_path: Path):
    for fraction in (0.1, 1.0):
        for seed in range(2):
            _run(tmp_path, "scratch", seed, 0.6 + 0.01 * seed, fraction)
            _run(tmp_path, "finetune", seed, 0.62 + 0.01 * seed, fraction)
    panels = runs_by_size(summarize(tmp_path, bootstrap=0))
    assert list(panels) == [0.1, 1.0]
    for size, groups in panels.items():
        assert set(groups) == {"scratch", "finetune"}
        assert all(r["fraction"] == size for runs in groups.values() for r in runs)


def test_failed_and_unreadable_runs_are_listed_not_trusted(tmp_path: Path):
    _run(tmp_path, "scratch", 0, 0.6)
    bad = tmp_path / "half_written"
    bad.mkdir()
    (bad / "results.json").write_text('{"status": "ok", "target": ')  # a torn write
    job = tmp_path / "still_running"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    _failed(tmp_path, "freeze_first_k", 1, "strategy.k=9; allowed: 0..4")
    runs, incomplete = collect(tmp_path)
    assert len(runs) == 2 and {Path(p).name for p in incomplete} == {"half_written", "still_running"}
    alien = tmp_path / "no_metric"
    alien.mkdir()
    (alien / "results.json").write_text('{"status": "ok", "seed": 0}')  # ok, but nothing to count
    s = write_summary(tmp_path)
    assert [(g.strategy, g.n, g.failed) for g in s.groups] == [("scratch", 1, 0), ("freeze_first_k", 0, 1)]
    assert s.failed[0]["error"].startswith("strategy.k=9")
    md = (tmp_path / "summary.md").read_text()
    assert "half_written" in md and "still_running" in md and "strategy.k=9" in md
    assert any("no_metric" in p and "no target test/acc" in p for p in s.incomplete)
    assert not math.isnan(s.groups[0].mean)


def test_labels_carry_varying_settings_and_differing_overrides(tmp_path: Path):
    """k varies within freeze_first_k, optim.lr differs between jobs, split_seed is a unit not a label;
    a failed job's settings come from its overrides, so it is counted in its own group."""
    def overrides(run_dir: Path, *items: str) -> None:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in items))

    for k in (1, 2):
        for split_seed in (0, 1):
            run = _run(tmp_path, "freeze_first_k", 0, 0.6 + 0.01 * k, k=k, split_seed=split_seed)
            overrides(run, f"strategy.k={k}", "trainer.max_epochs=1", f"target.split_seed={split_seed}")
    for lr in ("0.1", "0.01"):
        run = _run(tmp_path, "scratch", 0, 0.6, tag=lr)
        overrides(run, f"optim.lr={lr}", "trainer.max_epochs=1")
    failed = _failed(tmp_path, "freeze_first_k", 0, "NonFiniteLossError: loss is nan")
    overrides(failed, "strategy.k=2", "trainer.max_epochs=1")
    s = summarize(tmp_path, bootstrap=0)
    got = {g.strategy: (g.n, g.failed) for g in s.groups}
    assert got == {"freeze_first_k(k=1)": (2, 0), "freeze_first_k(k=2)": (2, 1),
                   "scratch [optim.lr=0.1]": (1, 0), "scratch [optim.lr=0.01]": (1, 0)}
    assert "ambiguous" in " ".join(s.notes) and not s.comparisons  # two scratch groups: no guessing


def test_sweep_callback_prints_the_winner_and_logs_a_duplicate_in_one_line(tmp_path: Path, capsys, caplog):
    from omegaconf import OmegaConf

    from xfer.hydra_callbacks import SummarizeSweep

    for seed in range(3):
        _run(tmp_path, "scratch", seed, 0.60 + 0.01 * seed)
        _run(tmp_path, "finetune", seed, 0.66 + 0.01 * seed + 0.002 * seed ** 2)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    SummarizeSweep(reference="scratch").on_multirun_end(config)
    out = capsys.readouterr().out
    assert "6 ok, 0 failed" in out and "winner on validation finetune" in out
    assert "significant (Holm, m=1): finetune vs scratch" in out
    _run(tmp_path, "finetune", 0, 0.5, tag="_again")
    SummarizeSweep().on_multirun_end(config)
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "duplicate runs of finetune" in record.getMessage() and "\n" not in record.getMessage()
    assert "python scripts/summarize.py" in record.getMessage() and record.exc_info is None


def test_report_modules_import_without_cycles():
    """Arrows point one way (write -> render, plots -> summary -> collect, stats); xfer.plots is only the
    confusion figure and never imports the report."""
    import ast

    src = ROOT / "src"
    files = {".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
             for p in [*(src / "xfer" / "report").glob("*.py"), src / "xfer" / "plots.py"]}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                deps |= {m for m in subs if m in files} or ({node.module} & set(files))
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & set(files)
        graph[name] = deps - {name}
    assert not graph["xfer.plots"]
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        if name not in done:
            for dep in graph.get(name, ()):
                visit(dep, path + (name,))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_the_frozen_random_control_is_a_planned_contrast_in_the_holm_family(tmp_path: Path):
    """linear_probe vs frozen_random (trained vs random frozen trunk) is compared by default wherever both
    ran, corrected together with the comparisons against scratch; other contrasts can be asked for."""
    rng = np.random.default_rng(3)
    for seed in range(5):
        base = 0.70 + rng.normal(0, 0.01)
        for name, lift in (("scratch", 0.0), ("linear_probe", 0.01), ("frozen_random", -0.09), ("finetune", 0.0)):
            _run(tmp_path, name, seed, float(base + lift + rng.normal(0, 0.005)))
    s = summarize(tmp_path, bootstrap=0)
    pairs = {(c.group.name, c.reference.name): c for c in s.comparisons}
    assert set(pairs) == {("linear_probe", "scratch"), ("frozen_random", "scratch"), ("finetune", "scratch"),
                          ("linear_probe", "frozen_random")}
    control = pairs[("linear_probe", "frozen_random")]
    assert control.contrast and control.diff.mean == pytest.approx(0.10, abs=0.01) and control.significant
    assert s.m == 4 and control.p_holm >= control.p  # in the family, not beside it
    assert "plus the planned contrast linear_probe vs frozen_random" in (write_summary(tmp_path, plots=False, bootstrap=0)
                                                                       and (tmp_path / "summary.md").read_text())
    assert {(c.group.name, c.reference.name) for c in summarize(tmp_path, bootstrap=0, contrasts="none").comparisons} \
        == {("linear_probe", "scratch"), ("frozen_random", "scratch"), ("finetune", "scratch")}
    asked = summarize(tmp_path, bootstrap=0, contrasts=["finetune:linear_probe"])
    assert any(c.contrast and (c.group.name, c.reference.name) == ("finetune", "linear_probe") for c in asked.comparisons)
    with pytest.raises(ReportError, match="contrast lp_ft:scratch matches no pair of groups"):
        summarize(tmp_path, bootstrap=0, contrasts=["lp_ft:scratch"])
    with pytest.raises(ReportError, match="contrast 'finetune'; allowed: A:B"):
        summarize(tmp_path, bootstrap=0, contrasts=["finetune"])
    alone = tmp_path.parent / f"{tmp_path.name}_no_scratch"
    for seed in range(3):  # no reference at all: the planned contrast is still made
        _run(alone, "linear_probe", seed, 0.72 + 0.01 * seed)
        _run(alone, "frozen_random", seed, 0.62 + 0.02 * seed)
    s_alone = write_summary(alone, bootstrap=0)
    [only] = s_alone.comparisons
    assert only.contrast and only.reference.name == "frozen_random" and s_alone.m == 1


def test_grouped_test_examples_are_bootstrapped_by_group():
    """Snippets of one movie are not independent: with group ids the bootstrap draws whole groups, so
    clustered differences give a wider (honest) interval than treating examples as independent."""
    rng = np.random.default_rng(11)
    groups = np.repeat(np.arange(40), 30)
    labels = rng.integers(0, 2, groups.size)
    effect = rng.normal(0, 0.25, 40)[groups]  # per-group disagreement between the two models
    ca = rng.random(groups.size) < 0.7 + effect / 2
    cb = rng.random(groups.size) < 0.7 - effect / 2
    flat = stats.bootstrap_diff([(labels, ca, cb)], n_boot=3000, seed=0)
    clustered = stats.bootstrap_diff([(labels, ca, cb, groups.astype(str))], n_boot=3000, seed=0)
    assert clustered[1] - clustered[0] > 1.5 * (flat[1] - flat[0])
    as_ints = stats.bootstrap_diff([(labels, ca, cb, groups)], n_boot=3000, seed=0)  # any id type
    assert as_ints == pytest.approx(clustered, abs=0.01)


def test_a_run_without_a_seed_is_refused_not_paired_with_seed_0(tmp_path: Path):
    _run(tmp_path, "scratch", 0, 0.6)
    path = _run(tmp_path, "finetune", 0, 0.7) / "results.json"
    data = json.loads(path.read_text())
    del data["seed"]
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError, match="has seed=None; allowed: an integer"):
        summarize(tmp_path)


def test_predictions_that_do_not_score_the_reported_accuracy_are_not_used(tmp_path: Path):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    for seed in range(2):
        for name in ("scratch", "finetune"):
            preds = _preds(rng, 400, 0.7, labels)
            acc = float(np.mean(preds[1] == preds[2])) + (0.05 if name == "finetune" else 0.0)  # e.g. bf16 vs fp32
            _run(tmp_path, name, seed, acc, preds=preds, test_ids="f00d")
    [c] = summarize(tmp_path).comparisons
    assert c.boot is None and "does not score the reported test/acc" in c.boot_note


def test_power_is_one_far_in_the_noncentral_tail():
    power = stats.paired_t_power(np.arange(2, 6), 0.01, 0.0005)
    assert not np.isnan(power).any() and 0.95 < power[0] < 0.99 and power[1:].min() > 0.999
    assert stats.seeds_needed(0.0005, 0.01) == 2


# -- settings: alpha and metric -----------------------------------------------------------------------

def test_alpha_and_metric_are_settings_of_the_summary(tmp_path: Path):
    """The significance level and the test score compared are settings, checked with one-line errors; the
    defaults (0.05, test/acc) give the summary as before."""
    rng = np.random.default_rng(11)
    for seed in range(5):
        base = 0.65 + rng.normal(0, 0.01)
        _run(tmp_path, "scratch", seed, float(base + rng.normal(0, 0.004)), f1=0.5 + 0.01 * seed)
        _run(tmp_path, "finetune", seed, float(base + 0.02 + rng.normal(0, 0.004)), f1=0.4 + 0.01 * seed)
    s = write_summary(tmp_path, plots=False)
    [c] = s.comparisons
    assert (s.alpha, s.metric) == (0.05, "test/acc") and c.significant and c.boot_note == "no predictions"
    assert "significant: Holm p < 0.05." in (tmp_path / "summary.md").read_text()
    strict = write_summary(tmp_path, plots=False, alpha=c.p_holm / 2)
    assert not strict.comparisons[0].significant and strict.comparisons[0].p_holm == c.p_holm
    assert f"significant: Holm p < {c.p_holm / 2:g}." in (tmp_path / "summary.md").read_text()
    f1 = write_summary(tmp_path, plots=True, metric="test/f1")
    [c] = f1.comparisons
    assert c.diff.mean == pytest.approx(-0.1) and sorted(g.mean for g in f1.groups) == pytest.approx([0.42, 0.52])
    assert c.boot is None and "resamples test/acc" in c.boot_note  # predictions give accuracy, not F1
    md = (tmp_path / "summary.md").read_text()
    assert "Metric: target test/f1 (%)" in md and "in macro-F1 points" in md
    for bad in (0, 1, 1.5, -0.1, float("nan"), "0.05", True):
        with pytest.raises(ReportError, match=r"^alpha=.*; allowed: a number with 0 < alpha < 1") as err:
            summarize(tmp_path, alpha=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ReportError, match=r"^metric=val/acc; allowed: test/acc, test/f1 \("):
        summarize(tmp_path, metric="val/acc")

    script = [sys.executable, str(ROOT / "scripts" / "summarize.py"), str(tmp_path), "--no-plots"]
    for flags, expected in ((["--alpha", "1"], "error: --alpha=1.0; allowed: a number with 0 < alpha < 1"),
                            (["--metric", "test/loss"], "error: --metric=test/loss; allowed: test/acc, test/f1")):
        proc = subprocess.run([*script, *flags], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1
    proc = subprocess.run([*script, "--alpha", "0.01", "--metric", "test/f1", "--bootstrap", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "significant: Holm p < 0.01." in proc.stdout and "target test/f1" in proc.stdout


def test_the_sweep_callback_takes_alpha_and_metric_from_its_config(tmp_path: Path, capsys):
    """conf/hydra/default.yaml states the callback's settings; they are the summary's defaults, so a sweep
    and scripts/summarize.py without flags agree; a bad value stops the run with one line."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from xfer.errors import ConfigError
    from xfer.hydra_callbacks import SummarizeSweep
    from xfer.report import settings

    node = OmegaConf.load(ROOT / "conf" / "hydra" / "default.yaml").callbacks.summarize
    callback = instantiate(node)
    assert (node.alpha, node.metric, node.reference) == (settings.DEFAULT_ALPHA, settings.DEFAULT_METRIC,
                                                         settings.DEFAULT_REFERENCE)
    assert tuple(node.contrasts) == settings.DEFAULT_CONTRASTS
    assert (callback.alpha, callback.metric, callback.contrasts) == (0.05, "test/acc", settings.DEFAULT_CONTRASTS)
    with pytest.raises(ConfigError, match=r"^hydra.callbacks.summarize.alpha=0; allowed: a number with 0 < alpha"):
        SummarizeSweep(alpha=0)
    with pytest.raises(ConfigError, match=r"^hydra.callbacks.summarize.metric=acc; allowed: test/acc, test/f1"):
        SummarizeSweep(metric="acc")
    for seed in range(3):
        _run(tmp_path, "scratch", seed, 0.60 + 0.01 * seed, f1=0.5)
        _run(tmp_path, "finetune", seed, 0.66 + 0.01 * seed + 0.002 * seed ** 2, f1=0.5 + 0.01 * seed)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    SummarizeSweep(metric="test/f1", alpha=0.01).on_multirun_end(config)
    assert "no difference from scratch is significant" in capsys.readouterr().out
    assert "Metric: target test/f1" in (tmp_path / "summary.md").read_text()


# -- when transfer pays ------------------------------------------------------------------------------
N_TRAIN = {0.1: [44, 50, 52, 95], 0.5: [240, 250, 260, 500], 1.0: [480, 500, 520, 999]}  # medians 51, 255, 510


def _gain_sweep(folder: Path, fractions=(0.1, 0.5, 1.0), n_train: bool = True) -> None:
    """linear_probe 6 points below scratch at the smallest size and 4 above at the largest; finetune
    within noise of scratch everywhere (its CI crosses zero). Seeds are paired: a good seed helps all."""
    lift = {"linear_probe": {0.1: -0.06, 0.5: 0.0, 1.0: 0.04}, "finetune": {0.1: 0.0, 0.5: 0.0, 1.0: 0.0}}
    wobble = {"scratch": [0.0, 0.0, 0.0, 0.0], "linear_probe": [0.004, -0.003, 0.003, -0.004],
              "finetune": [0.02, -0.015, 0.015, -0.02]}
    for fraction in fractions:
        for seed in range(4):
            base = 0.5 + 0.2 * fraction + 0.01 * seed
            for name in ("scratch", "linear_probe", "finetune"):
                acc = base + lift.get(name, {}).get(fraction, 0.0) + wobble[name][seed]
                _run(folder, name, seed, acc, fraction, n_train=N_TRAIN[fraction][seed] if n_train else None)


def test_transfer_gain_plots_the_difference_against_the_median_n_train(tmp_path: Path):
    _gain_sweep(tmp_path)
    s = write_summary(tmp_path, bootstrap=0)
    gain = transfer_gain(s)
    assert set(gain) == {"linear_probe", "finetune"}  # the reference is the zero line, not a curve
    assert [n for n, _ in gain["linear_probe"]] == [51.0, 255.0, 510.0]  # medians, not means (60.25, ...)
    assert [c.data for _, c in gain["linear_probe"]] == [0.1, 0.5, 1.0]
    assert all(c.reference.strategy == "scratch" for pts in gain.values() for _, c in pts)
    assert [c.diff.mean for _, c in gain["linear_probe"]] == pytest.approx([-0.06, 0.0, 0.04], abs=1e-9)
    assert (tmp_path / "transfer_gain.png").stat().st_size > 1000
    assert "![difference from scratch against labelled target examples](transfer_gain.png)" in \
        (tmp_path / "summary.md").read_text()


def test_negative_transfer_is_named_in_plain_words_with_holm_verdict(tmp_path: Path):
    _gain_sweep(tmp_path)
    s = write_summary(tmp_path, bootstrap=0, plots=False)
    cmp = {(c.group.strategy, c.data): c for c in s.comparisons}
    hurt, crossing = cmp[("linear_probe", 0.1)], cmp[("finetune", 0.1)]
    assert hurt.diff.ci_high < 0 and crossing.diff.ci_low < 0 < crossing.diff.ci_high  # the setup holds
    assert cmp[("linear_probe", 1.0)].diff.ci_low > 0
    md = (tmp_path / "summary.md").read_text()
    lines = [line for line in md.splitlines() if "negative transfer:" in line]
    assert lines == [f"- negative transfer: linear_probe is worse than scratch at data=0.1 (n_train=51): -6.00 "
                     f"accuracy points {_interval_text(hurt)} (95% t-CI, uncorrected); it also survives Holm's "
                     f"correction (Holm p = {hurt.p_holm:.3g} < 0.05, m=6)."]
    assert hurt.significant
    # at a strict alpha the same CI stands but Holm does not: the line says so
    strict = write_summary(tmp_path, bootstrap=0, plots=False, alpha=hurt.p_holm / 2)
    [line] = [ln for ln in (tmp_path / "summary.md").read_text().splitlines() if "negative transfer:" in ln]
    assert not _by_label_at(strict, "linear_probe", 0.1).significant
    assert "it does not survive Holm's correction" in line and "not a finding" in line


def test_no_negative_line_and_no_gain_plot_for_a_single_size_or_without_n_train(tmp_path: Path):
    one, bare = tmp_path / "one", tmp_path / "bare"
    _gain_sweep(one, fractions=(1.0,))
    s = write_summary(one, bootstrap=0)
    assert s.comparisons and transfer_gain(s) == {}
    assert not (one / "transfer_gain.png").exists() and (one / "difference_from_reference.png").exists()
    md = (one / "summary.md").read_text()
    assert "negative transfer" not in md and "transfer_gain.png" not in md  # linear_probe is ahead at 1.0
    _gain_sweep(bare, n_train=False)  # runs from before target.sizes was recorded: no x to draw against
    s = write_summary(bare, bootstrap=0)
    assert transfer_gain(s) == {} and not (bare / "transfer_gain.png").exists()
    assert "at data=0.1: -6.00 accuracy points" in (bare / "summary.md").read_text()  # the line, without n_train


def _interval_text(c) -> str:
    return f"[{100 * c.diff.ci_low:+.2f}, {100 * c.diff.ci_high:+.2f}]"


def _by_label_at(s, label: str, data) -> object:
    [c] = [c for c in s.comparisons if c.group.strategy == label and c.data == data]
    return c


# -- transferability scores against the sweep ---------------------------------------------------------
def test_kendall_tau_b():
    from xfer.report.transfer_check import kendall_tau

    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / np.sqrt(5 * 6))  # a tie in x: tau-b
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None


def _transfer_report(folder: Path, seed: int, logme: list[float], knn: list[float]) -> None:
    depths = [{"depth": k + 1, "block": "ConvBlock", "dim": 8, "logme": logme[k], "h_score": float(k),
               "knn_acc": knn[k], "probe_acc": 0.5} for k in range(len(logme))]
    report = {"seed": seed, "command": f"python analyze.py transfer run=x{seed}",
              "variants": [{"name": "source-trained", "feeding": "source adapter (trained on mnist5k)",
                            "depths": depths, "top": None},
                           {"name": "random", "feeding": "warm-up", "depths": depths, "top": None}]}
    out = folder / "transfer" / f"seed{seed}"
    out.mkdir(parents=True)
    (out / "transfer.json").write_text(json.dumps(report))


def test_the_summary_ranks_the_scores_per_depth_against_the_layer_sweep(tmp_path: Path):
    for seed in range(3):
        for k in (1, 2, 3, 4):
            _run(tmp_path, "freeze_first_k", seed, 0.6 + 0.05 * k + 0.01 * seed, k=k)
        # LogME rises with depth as accuracy does; k-NN falls
        _transfer_report(tmp_path, seed, [-0.6 + 0.05 * k + 0.001 * seed for k in range(4)],
                         [0.9 - 0.1 * k for k in range(4)])
    write_summary(tmp_path, plots=False)
    md = (tmp_path / "summary.md").read_text()
    assert "## Transferability scores against what the sweep measured" in md and "### freeze_first_k" in md
    row = next(line for line in md.splitlines() if line.startswith("| Kendall tau"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("+1.00 [+1.00, +1.00]") and cells[3].startswith("-1.00"), cells  # LogME, k-NN
    assert "| 81.0 |" in md  # depth 4: mean test accuracy over seeds
    assert "LogME k=4" in md and "k-NN k=1" in md and "validation chooses k=4" in md


def test_no_transfer_reports_no_section(tmp_path: Path):
    for seed in range(2):
        _run(tmp_path, "finetune", seed, 0.7)
        _run(tmp_path, "scratch", seed, 0.6)
    write_summary(tmp_path, plots=False)
    assert "Transferability scores" not in (tmp_path / "summary.md").read_text()


def _frozen_report(folder: Path, seed: int, trained: float, random: float) -> None:
    def depths(top: float) -> list[dict]:
        return [{"depth": k, "block": "ConvBlock", "dim": 8, "logme": top - 0.1 * (2 - k), "h_score": top,
                 "knn_acc": 0.5, "probe_acc": top} for k in (1, 2)]

    report = {"seed": seed, "variants": [{"name": "source-trained", "feeding": "source adapter", "depths": depths(trained),
                                          "top": None},
                                         {"name": "random", "feeding": "warm-up", "depths": depths(random), "top": None}]}
    out = folder / "transfer" / f"seed{seed}"
    out.mkdir(parents=True)
    (out / "transfer.json").write_text(json.dumps(report))


def test_the_summary_ranks_the_frozen_trunks_scores_against_linear_probe_and_frozen_random(tmp_path: Path):
    """sweep=strategies / sweep=fractions: the trunks the scores describe are the ones linear_probe
    (source-trained) and frozen_random (random) train a head on; tau runs over the (strategy, seed) units."""
    for seed in range(3):
        for fraction in (0.1, 1.0):
            _run(tmp_path, "linear_probe", seed, 0.80 + 0.01 * seed + 0.05 * fraction, fraction)
            _run(tmp_path, "frozen_random", seed, 0.60 + 0.01 * seed + 0.05 * fraction, fraction)
            _run(tmp_path, "finetune", seed, 0.85, fraction)  # no depth of the scores: not ranked
        _frozen_report(tmp_path, seed, trained=0.9 + 0.001 * seed, random=0.7 + 0.001 * seed)
    write_summary(tmp_path, plots=False)
    md = (tmp_path / "summary.md").read_text()
    assert "### Frozen trunks: linear_probe (source-trained) and frozen_random (random)" in md
    assert "data=0.1 (seeds 0, 1, 2):" in md and "data=1.0 (seeds 0, 1, 2):" in md
    rows = [line for line in md.splitlines() if line.startswith("| Kendall tau")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1].startswith("+1.00") and cells[2].startswith("+1.00") and cells[3] == "n/a", cells  # k-NN ties
    assert "| linear_probe | 0.901 | 0.901 | 0.5 | 0.901 | 81.5 |" in md  # seed means of the top depth, acc at 0.1
    assert "Each score would choose: LogME linear_probe, H-score linear_probe, k-NN a tie, probe linear_probe; " \
           "validation chooses linear_probe." in md


def test_a_sweep_without_rankable_strategies_still_shows_the_scores(tmp_path: Path):
    for seed in range(2):
        _run(tmp_path, "finetune", seed, 0.7)
        _run(tmp_path, "scratch", seed, 0.6)
        _frozen_report(tmp_path, seed, trained=0.9, random=0.7)
    write_summary(tmp_path, plots=False)
    md = (tmp_path / "summary.md").read_text()
    assert "nothing to rank the scores against" in md and "| 2 | 0.9 | 0.9 | 0.5 | 0.9 |" in md


def _similarity(run_dir: Path, rng: np.random.Generator, moved: list[float], val_ids: str = "v1",
                base: np.ndarray | None = None) -> np.ndarray:
    feats = base + 0.3 * rng.normal(size=base.shape) if base is not None else rng.normal(size=(40, 6))
    (run_dir / "similarity").mkdir()
    np.savez(run_dir / "similarity" / "features.npz", block0=feats, block1=feats[:, :3])
    results = json.loads((run_dir / "results.json").read_text())
    results["target"]["similarity"] = {"examples": 40, "blocks": ["0:ConvBlock", "1:ConvBlock"], "val_ids": val_ids,
                                       "initial_vs_final": moved, "source_vs_final": None,
                                       "source_note": "n/a: source mnist5k is image, target rt is text"}
    (run_dir / "results.json").write_text(json.dumps(results))
    return feats


def test_the_summary_compares_seeds_and_strategies_by_cka_per_block(tmp_path: Path):
    from xfer.analysis.scores import linear_cka

    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 6))
    feats = {}
    for seed in range(3):
        feats[seed] = _similarity(_run(tmp_path, "finetune", seed, 0.7), rng, [0.9, 0.5 + 0.1 * seed], base=base)
        _similarity(_run(tmp_path, "linear_probe", seed, 0.6), rng, [1.0, 1.0])
    odd = _run(tmp_path, "scratch", 0, 0.5)
    _similarity(odd, rng, [0.8, 0.4], val_ids="other")  # another val split: kept out of the pairs
    _similarity(_run(tmp_path, "scratch", 1, 0.5), rng, [0.8, 0.4])
    write_summary(tmp_path, plots=True)
    md = (tmp_path / "summary.md").read_text()
    assert "## Representation similarity per trunk block (linear CKA)" in md
    assert "| finetune (n=3) | 1.0 | 0.90 | 0.60 |" in md  # what moved: the mean over seeds
    pairs = [[linear_cka(feats[a], feats[b]), linear_cka(feats[a][:, :3], feats[b][:, :3])]
             for a, b in ((0, 1), (0, 2), (1, 2))]
    mean, low = np.mean(pairs, axis=0), np.min(pairs, axis=0)
    assert f"| finetune (3 pairs) | 1.0 | {mean[0]:.2f} [{low[0]:.2f}] | {mean[1]:.2f} [{low[1]:.2f}] |" in md
    assert mean[0] > 0.5  # the seeds share most of their features; independent ones would be near 0
    assert "| scratch (n=1) |" in md and "scratch (1 pair" not in md  # the odd split is compared with nothing
    assert "(n/a: source mnist5k is image, target rt is text)" in md
    assert (tmp_path / "similarity.png").is_file() and "](similarity.png)" in md


def test_an_interrupted_run_resumed_to_the_end_counts_once(tmp_path: Path):
    stopped = tmp_path / "0_finetune_f1.0_s0"
    stopped.mkdir()
    (stopped / "results.json").write_text(json.dumps({
        "status": "interrupted", "run_dir": str(stopped), "seed": 0, "strategy": {"name": "finetune"},
        "fraction": 1.0, "error": "interrupted by SIGTERM in the target stage, epoch 2 of 3"}))
    other = tmp_path / "1_finetune_f1.0_s1"  # interrupted, and never resumed: still listed
    other.mkdir()
    (other / "results.json").write_text(json.dumps({
        "status": "interrupted", "run_dir": str(other), "seed": 1, "strategy": {"name": "finetune"},
        "fraction": 1.0, "error": "interrupted by SIGTERM in the target stage, epoch 1 of 3"}))
    done = _run(tmp_path, "finetune", 0, 0.7)
    results = json.loads((done / "results.json").read_text())
    results["resumed_from"] = {"checkpoint": str(stopped / "checkpoints/target/last.ckpt"), "run_dir": str(stopped),
                               "epoch": 2}
    (done / "results.json").write_text(json.dumps(results))
    s = write_summary(tmp_path, plots=False)
    assert [(g.strategy, g.n, g.failed) for g in s.groups] == [("finetune", 1, 1)]
    md = (tmp_path / "summary.md").read_text()
    assert "1 interrupted run resumed to the end in another folder, counted once" in md and stopped.name in md
    assert "## Failed or interrupted jobs" in md and "| 1_finetune_f1.0_s1 |" in md


def test_groups_at_the_majority_class_floor_are_named_in_the_summary_and_on_the_study_page(tmp_path: Path):
    """A null result among models that predict the most common class says they learned little: the
    summary and the study page say so, from the runs' confusion matrices (57.5% of test is class 1 here)."""
    from xfer.report.render import to_markdown
    from xfer.report.study import answer

    for seed in range(3):
        for name, acc in (("scratch", 0.574 + 0.001 * seed), ("finetune", 0.580), ("linear_probe", 0.70 + 0.01 * seed)):
            run_dir = _run(tmp_path, name, seed, acc)
            results = json.loads((run_dir / "results.json").read_text())
            results["target"]["confusion_matrix"] = [[17, 523], [13, 719]]
            (run_dir / "results.json").write_text(json.dumps(results))
    s = summarize(tmp_path, bootstrap=0)
    [f] = s.floors(1.0)
    assert f.rate == pytest.approx(732 / 1272)
    assert sorted(f.near) == ["finetune", "scratch"]  # 58.0 <= 57.5 + 1; linear_probe (70-72%) learned
    md = to_markdown(s)
    assert ("Majority-class floor at data=1.0: 57.5% of test; within 1 point of it or below: " in md
            and "(they learned little beyond predicting the most common class)." in md)
    assert any(line.startswith("majority-class floor at data=1.0: 57.5%") for line in answer(s))
    # runs without a confusion matrix (older runs) give no floor rather than a guess
    other = tmp_path.parent / "nomatrix"
    for seed in range(2):
        _run(other, "scratch", seed, 0.57)
    assert summarize(other, bootstrap=0).floors(1.0) == []
