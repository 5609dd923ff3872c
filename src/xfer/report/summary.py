"""A sweep's groups and comparisons, following the research protocol: the winner is picked on
validation, and every group is compared with the reference as a paired difference over the
(seed, split_seed) units both ran, Holm-corrected over every comparison in the summary.

Two settings shape the verdicts: ``metric``, the test score compared (one of ``settings.METRICS``), and
``alpha``, the level Holm-adjusted p-values are called significant at (defaults: xfer.report.settings)."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xfer.report import stats
from xfer.report.collect import (DIR, Folders, ReportError, as_folders, collect, data_size, fingerprint,
                                 load_predictions, unit)
from xfer.report.labels import run_labels
from xfer.report.settings import (ACCURACY, DEFAULT_ALPHA, DEFAULT_CONTRASTS, DEFAULT_METRIC, DEFAULT_REFERENCE,
                                  METRICS, check_alpha, check_metric)

Unit = tuple[int, int]  # (seed, split_seed)


@dataclass(eq=False)  # identity: two groups with equal numbers are still two groups
class Group:
    """The ok runs of one label at one data size, keyed by unit, plus how many of its jobs failed."""

    strategy: str  # the label: strategy name, varying settings, differing overrides, experiment prefix
    data: Any
    name: str  # the bare strategy name
    experiment: str | None
    values: dict[Unit, float] = field(default_factory=dict)  # the summary's test metric
    val: dict[Unit, float] = field(default_factory=dict)  # best-checkpoint validation accuracy, where recorded
    runs: dict[Unit, dict[str, Any]] = field(default_factory=dict)
    failed: int = 0

    @property
    def short(self) -> str:
        """The label without its experiment prefix."""
        prefix = f"{self.experiment}/"
        return self.strategy[len(prefix):] if self.experiment and self.strategy.startswith(prefix) else self.strategy

    @property
    def fraction(self) -> Any:
        return self.data

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def units(self) -> list[Unit]:
        return sorted(self.values)

    @property
    def mean(self) -> float:
        return stats.mean_sd_ci(list(self.values.values()))[0]

    @property
    def std(self) -> float | None:
        return stats.mean_sd_ci(list(self.values.values()))[1]

    @property
    def ci95(self) -> float | None:
        """Half-width of the 95% Student-t CI of the mean test metric (None for n < 2)."""
        return stats.mean_sd_ci(list(self.values.values()))[2]

    @property
    def val_mean(self) -> float | None:
        return float(np.mean(list(self.val.values()))) if self.val else None


@dataclass(eq=False)
class Comparison:
    """One group against the reference at the same data size, paired on the units both ran."""

    group: Group
    reference: Group
    units: list[Unit]
    dropped: dict[str, list[Unit]]  # label -> its units without a partner
    diff: stats.PairedDiff
    p: float | None  # the primary p: paired t, exact sign-flip (no spread), McNemar (one unit)
    test: str
    mcnemar: float | None = None
    boot: tuple[float, float] | None = None
    boot_note: str = ""  # why there is no bootstrap CI
    p_holm: float | None = None
    significant: bool = False
    seeds_1pt: int | str | None = None
    seeds_2pt: int | str | None = None
    contrast: bool = False  # a planned contrast (not against the reference)

    @property
    def data(self) -> Any:
        return self.group.data

    @property
    def n(self) -> int:
        return len(self.units)


@dataclass
class Winner:
    data: Any
    group: Group | None
    note: str = ""


@dataclass
class Summary:
    folders: list[Path]
    groups: list[Group]
    comparisons: list[Comparison]
    winners: dict[Any, Winner]
    references: dict[Any, Group]  # data size -> its reference group
    reference: str
    failed: list[dict[str, Any]]
    incomplete: list[str]
    runs: list[dict[str, Any]]  # the ok runs kept
    notes: list[str] = field(default_factory=list)
    kept_newest: list[tuple[str, str]] = field(default_factory=list)  # (kept, dropped) run folders
    bootstrap: int = 0
    contrasts: tuple[str, ...] = ()  # the planned contrasts asked for, "A:B"
    alpha: float = DEFAULT_ALPHA  # significant: Holm p < alpha
    metric: str = DEFAULT_METRIC  # the test score in values, one of METRICS

    @property
    def m(self) -> int:
        """Size of the Holm family: comparisons that have a p-value."""
        return sum(c.p is not None for c in self.comparisons)

    @property
    def score(self) -> str:
        """The metric's name without "test" (accuracy, macro-F1): what a difference is in points of."""
        return METRICS[self.metric].removeprefix("test ")

    @property
    def sizes(self) -> list[Any]:
        return sorted({g.data for g in self.groups}, key=size_key)

    def floors(self, size: Any) -> list[Floor]:
        """The majority-class floor of the test set at ``size``, one per distinct rate among the groups there
        (one for a shared test set), with the groups that score within NEAR_FLOOR of it or below: a model
        that predicts the most common class scores the floor, so a null result among them says the models
        learned little, not that transfer is useless. Accuracy only (macro-F1 has no such floor)."""
        if self.metric != ACCURACY:
            return []
        rates: dict[float, Floor] = {}
        for g in self.groups:
            rate = next((r for r in map(majority_rate, g.runs.values()) if r is not None), None)
            if g.data != size or not g.n or rate is None:
                continue
            f = rates.setdefault(round(rate, 6), Floor(rate, []))
            if g.mean <= rate + NEAR_FLOOR:
                f.near.append(g.strategy)
        return list(rates.values())


NEAR_FLOOR = 0.01  # a group within one point of the majority-class floor (or below it) learned little


@dataclass
class Floor:
    rate: float  # the test share of the most common class
    near: list[str]  # the groups whose mean is at most rate + NEAR_FLOOR


def majority_rate(run: dict[str, Any]) -> float | None:
    """The share of the most common class in the run's test split, from its confusion matrix (rows: true)."""
    cm = (run.get("target") or {}).get("confusion_matrix")
    try:
        counts = np.asarray(cm, dtype=float).sum(axis=1)
    except (TypeError, ValueError):
        return None
    return float(counts.max() / counts.sum()) if counts.ndim == 1 and counts.size > 1 and counts.sum() > 0 else None


def floor_line(f: Floor, size: Any) -> str:
    """One sentence on the floor at ``size``, for summary.md and the study page."""
    text = f"majority-class floor at data={size}: {100 * f.rate:.1f}% of test"
    if f.near:
        text += (f"; within {100 * NEAR_FLOOR:.0f} point of it or below: {', '.join(f.near)} (they learned little "
                 "beyond predicting the most common class)")
    return text


def size_key(size: Any) -> tuple[int, float, str]:
    """Data sizes in order: fractions by value, then samples-per-class labels."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        return 0, float(size), ""
    return (1, 0.0, str(size)) if size is not None else (2, 0.0, "")


def fmt_unit(u: Unit) -> str:
    return f"seed {u[0]}" if u[1] == 0 else f"seed {u[0]} split {u[1]}"


def n_train(s: Summary, size: Any) -> float | None:
    """Median labelled target training examples (target.sizes.train) over the runs at one data size: a
    fraction means a different count on every dataset, the count is what transfer is judged against."""
    counts = [((r.get("target") or {}).get("sizes") or {}).get("train") for g in s.groups if g.data == size
              for r in g.runs.values()]
    counts = [n for n in counts if isinstance(n, (int, float)) and not isinstance(n, bool)]
    return float(np.median(counts)) if counts else None


def transfer_comparisons(s: Summary) -> list[Comparison]:
    """The comparisons that say whether transfer pays: each group against its size's reference, from the
    same experiment (not a planned contrast, not another experiment's baseline)."""
    return [c for c in s.comparisons if not c.contrast and c.reference is s.references.get(c.data)
            and not (c.group.experiment and c.reference.experiment and c.group.experiment != c.reference.experiment)]


def transfer_gain(s: Summary) -> dict[str, list[tuple[float, Comparison]]]:
    """label -> (n_train, its comparison) by n_train, for the transfer-gain plot; empty with one data size,
    no comparisons, or fewer than two sizes that record target.sizes.train (nothing to draw a curve over)."""
    if len(s.sizes) < 2:
        return {}
    x = {size: n_train(s, size) for size in s.sizes}
    out: dict[str, list[tuple[float, Comparison]]] = {}
    for c in transfer_comparisons(s):
        if x[c.data] is not None:
            out.setdefault(c.group.strategy, []).append((x[c.data], c))
    if len({n for pts in out.values() for n, _ in pts}) < 2:
        return {}
    return {label: sorted(pts, key=lambda p: p[0]) for label, pts in out.items()}


def _group_runs(ok: list[dict[str, Any]], failed: list[dict[str, Any]], keep_newest: bool, metric: str
                ) -> tuple[dict[tuple[str, Any], Group], list[tuple[str, str]]]:
    labels = run_labels(ok, failed)
    groups: dict[tuple[str, Any], Group] = {}
    kept: list[tuple[str, str]] = []

    def group_of(r: dict[str, Any]) -> Group:
        key = (labels[id(r)], data_size(r))
        if key not in groups:
            groups[key] = Group(key[0], key[1], (r.get("strategy") or {}).get("name", "?"), r.get("experiment"))
        return groups[key]

    for r in ok:
        g, u = group_of(r), unit(r)
        old = g.runs.get(u)
        if old is not None:
            if not keep_newest:
                raise ReportError(
                    f"duplicate runs of {g.strategy} at data={g.data}, {fmt_unit(u)}: {old[DIR]} and {r[DIR]}; "
                    "delete one of the two folders, or pass --keep-newest to keep the newer run")
            if float(r.get("started_unix") or 0) <= float(old.get("started_unix") or 0):
                kept.append((old[DIR], r[DIR]))
                continue
            kept.append((r[DIR], old[DIR]))
        g.runs[u] = r
        g.values[u] = float(r["target"]["test"][metric])
        best_val = (r.get("target") or {}).get("best_val")
        if best_val is not None:
            g.val[u] = float(best_val)
        else:
            g.val.pop(u, None)
    for r in failed:
        group_of(r).failed += 1
    return groups, kept


def _pick_reference(members: list[Group], reference: str, runs_per_exp: Counter) -> list[Group]:
    """The groups at one data size that ``reference`` names: by label, else by label without the
    experiment prefix, else by strategy name; several experiments: the one with the most runs."""
    ok = [g for g in members if g.n > 0]
    found = ([g for g in ok if g.strategy == reference] or [g for g in ok if g.short == reference]
             or [g for g in ok if g.name == reference])
    if len({g.experiment for g in found}) > 1:
        best = max(runs_per_exp[g.experiment] for g in found)
        found = [g for g in found if runs_per_exp[g.experiment] == best]
    return found


def _different_test_sets(g: Group, ref: Group, shared: list[Unit]) -> str:
    """Why two groups' runs of a unit were scored on different test examples ("" when they were not)."""
    for u in shared:
        fa, fb = fingerprint(g.runs[u]), fingerprint(ref.runs[u])
        if fa and fb and fa != fb:
            return f"at {fmt_unit(u)} their test sets differ (test_ids {fa} vs {fb})"
    return ""


def _load(r: dict[str, Any], cache: dict[str, Any]) -> dict[str, np.ndarray] | None:
    if r[DIR] not in cache:
        cache[r[DIR]] = load_predictions(r)
    return cache[r[DIR]]


def _usable(r: dict[str, Any], p: dict[str, np.ndarray]) -> bool:
    """The predictions score what the run reported: a mismatch (e.g. predictions made at another precision
    than the test loop's) would describe a slightly different model."""
    reported = ((r.get("target") or {}).get("test") or {}).get(ACCURACY)
    if reported is None or not len(p["label"]):
        return False
    return abs(float(np.mean(p["pred"] == p["label"])) - float(reported)) <= 0.5 / len(p["label"]) + 1e-9


def _prediction_pairs(c: Comparison, cache: dict[str, Any]) -> tuple[list[tuple], str]:
    """Per shared unit (labels, correct_a, correct_b, groups or None) on the same test examples, or why
    there are none."""
    out = []
    for u in c.units:
        ra, rb = c.group.runs[u], c.reference.runs[u]
        pa, pb = _load(ra, cache), _load(rb, cache)
        if pa is None or pb is None:
            return [], "no predictions"
        if not (np.array_equal(pa["index"], pb["index"]) and np.array_equal(pa["label"], pb["label"])):
            return [], f"test sets differ at {fmt_unit(u)} (example indices)"
        if not (_usable(ra, pa) and _usable(rb, pb)):
            return [], f"predictions.npz does not score the reported {ACCURACY} at {fmt_unit(u)}"
        out.append((pa["label"], pa["pred"] == pa["label"], pb["pred"] == pb["label"], pa.get("group")))
    return out, ""


def _compare(g: Group, ref: Group, bootstrap: int, seed: int, cache: dict[str, Any], metric: str
             ) -> Comparison | None:
    shared = sorted(set(g.values) & set(ref.values))
    if not shared or _different_test_sets(g, ref, shared):
        return None
    dropped = {lab: sorted(set(grp.values) - set(shared)) for lab, grp in ((g.strategy, g), (ref.strategy, ref))}
    diff = stats.paired_difference([g.values[u] for u in shared], [ref.values[u] for u in shared])
    c = Comparison(g, ref, shared, {k: v for k, v in dropped.items() if v}, diff, diff.p, diff.test)
    if bootstrap <= 0 and len(shared) > 1:
        c.boot_note = "bootstrap off"
        return c
    if metric != ACCURACY:  # the predictions give accuracy differences, not differences in this metric
        c.boot_note = f"the bootstrap resamples {ACCURACY}, not {metric}"
        return c
    pairs, c.boot_note = _prediction_pairs(c, cache)
    if pairs and len(shared) == 1 and pairs[0][3] is None:
        # one seed: McNemar says whether these two trained models differ on these test examples; it says
        # nothing about the strategies (seed-to-seed variation is unseen), so it stays out of Holm's family
        c.mcnemar = stats.mcnemar_exact(pairs[0][1], pairs[0][2])
        c.test = "none (one unit; McNemar on the two models is descriptive)"
    if pairs and bootstrap > 0:
        c.boot = stats.bootstrap_diff(pairs, n_boot=bootstrap, seed=seed)
    elif pairs:
        c.boot_note = "bootstrap off"
    return c


def parse_contrasts(contrasts: Sequence[str] | str | None) -> tuple[tuple[str, str], ...]:
    """``["A:B", ...]`` (or one comma-separated string) as pairs; "none" or empty: no contrasts."""
    if contrasts is None:
        return ()
    items = contrasts.split(",") if isinstance(contrasts, str) else list(contrasts)
    out = []
    for item in (str(i).strip() for i in items):
        if not item or item == "none":
            continue
        a, sep, b = item.partition(":")
        if not sep or not a.strip() or not b.strip() or a.strip() == b.strip():
            raise ReportError(f"contrast {item!r}; allowed: A:B with two different group labels or strategy "
                              "names (A minus B), e.g. linear_probe:frozen_random, or none")
        out.append((a.strip(), b.strip()))
    return tuple(out)


def summarize(folders: Folders, reference: str = DEFAULT_REFERENCE, keep_newest: bool = False,
              bootstrap: int = 2000, bootstrap_seed: int = 0,
              contrasts: Sequence[str] | str | None = DEFAULT_CONTRASTS, alpha: float = DEFAULT_ALPHA,
              metric: str = DEFAULT_METRIC) -> Summary:
    """Read every run under ``folders`` and build the groups of their test ``metric``, the winners (on
    validation), the comparisons with the reference and the planned ``contrasts``, significant at Holm
    p < ``alpha``. Raises ReportError for an alpha or metric that is not allowed, for duplicate runs (unless
    ``keep_newest``), for a reference other than the default that names no group, and for an asked-for
    contrast that matches no pair of groups."""
    alpha, metric = check_alpha(alpha), check_metric(metric)
    pairs = parse_contrasts(contrasts)
    runs, incomplete = collect(folders)
    ok = [r for r in runs if r.get("status") == "ok"]
    failed = [r for r in runs if r.get("status") != "ok"]
    # an interrupted run that a later run resumed to the end (resume= continues in a new folder) is that run
    resumed = {str(Path(r["resumed_from"]["run_dir"]).resolve()) for r in ok
               if isinstance(r.get("resumed_from"), dict) and r["resumed_from"].get("run_dir")}
    continued = [r for r in failed if r.get("status") == "interrupted" and str(Path(r[DIR]).resolve()) in resumed]
    failed = [r for r in failed if r not in continued]
    unscored = {id(r) for r in ok if not isinstance(((r.get("target") or {}).get("test") or {}).get(metric),
                                                    (int, float))}
    val_only = [r for r in ok if id(r) in unscored and r.get("eval_test") is False]
    if unscored:  # an ok status without the metric: a file written by something else; never guess
        incomplete += [f"{r[DIR]} (results.json has no target {metric})" for r in ok
                       if id(r) in unscored and r.get("eval_test") is not False]
        ok = [r for r in ok if id(r) not in unscored]
    by_key, kept = _group_runs(ok, failed, keep_newest, metric)
    dropped_dirs = {d for _, d in kept}
    ok = [r for r in ok if r[DIR] not in dropped_dirs]
    groups = sorted(by_key.values(), key=lambda g: (size_key(g.data), -(g.val_mean if g.val_mean is not None
                                                                      else -math.inf), -_mean0(g), g.strategy))
    s = Summary(as_folders(folders), groups, [], {}, {}, reference, failed, incomplete, ok, [], kept, bootstrap,
                tuple(f"{a}:{b}" for a, b in pairs), alpha, metric)
    made: set[tuple[str, str]] = set()
    if continued:
        s.notes.append(f"{len(continued)} interrupted run{'s' if len(continued) > 1 else ''} resumed to the end in "
                       f"another folder, counted once, as the run that finished: "
                       + ", ".join(Path(r[DIR]).name for r in continued) + ".")
    if val_only:
        s.notes.append(f"{len(val_only)} validation-only run{'s' if len(val_only) > 1 else ''} (eval_test=false: "
                       "tuning trials, which never evaluate the test split) left out of this summary.")
    runs_per_exp = Counter(r.get("experiment") for r in ok)
    cache: dict[str, Any] = {}
    for size in s.sizes:
        members = [g for g in groups if g.data == size]
        s.winners[size] = _winner(size, members)
        found = _pick_reference(members, reference, runs_per_exp)
        if len(found) > 1:
            names = ", ".join(g.strategy for g in found)
            if reference != DEFAULT_REFERENCE:
                raise ReportError(f"reference {reference!r} is ambiguous at data={size}: it matches {names}; "
                                  "pass one of these labels with --reference")
            s.notes.append(f"Reference {reference!r} is ambiguous at data={size} ({names}): no comparisons there.")
            continue
        if not found:
            s.notes.append(f"No reference group {reference!r} at data={size}: no comparisons there.")
            continue
        s.references[size] = ref = found[0]
        for g in members:
            if g is not ref and g.n > 0:
                c = _compare(g, ref, bootstrap, bootstrap_seed, cache, metric)
                if c is None:
                    shared = sorted(set(g.values) & set(ref.values))
                    why = _different_test_sets(g, ref, shared) or "no (seed, split_seed) unit in common"
                    s.notes.append(f"{g.strategy} vs {ref.strategy} at data={size}: {why}; not compared.")
                else:
                    s.comparisons.append(c)
    for size in s.sizes:  # planned contrasts: wherever both groups ran, with or without a reference
        members = [g for g in groups if g.data == size]
        for a, b in pairs:
            fa, fb = (_pick_reference(members, name, runs_per_exp) for name in (a, b))
            if len(fa) != 1 or len(fb) != 1:
                continue
            ga, gb = fa[0], fb[0]
            if any({c.group, c.reference} == {ga, gb} for c in s.comparisons):
                made.add((a, b))
                continue
            c = _compare(ga, gb, bootstrap, bootstrap_seed, cache, metric)
            if c is not None:
                c.contrast = True
                s.comparisons.append(c)
                made.add((a, b))
    asked = pairs if contrasts is not DEFAULT_CONTRASTS else ()  # the default applies only where it can
    missing = [f"{a}:{b}" for a, b in asked if (a, b) not in made]
    if missing and groups:
        raise ReportError(f"contrast {missing[0]} matches no pair of groups with shared units; allowed: labels or "
                          f"strategy names of this sweep ({', '.join(sorted({g.strategy for g in groups}))})")
    if reference != DEFAULT_REFERENCE and groups and not s.references:
        names = sorted({g.strategy for g in groups} | {g.name for g in groups})
        raise ReportError(f"reference {reference!r} matches no group; allowed: a label or strategy name of this "
                          f"sweep ({', '.join(names)})")
    _correct(s)
    return s


def _mean0(g: Group) -> float:
    return g.mean if g.n else -math.inf


def _winner(size: Any, members: list[Group]) -> Winner:
    scored = [g for g in members if g.n > 0 and g.val_mean is not None]
    if not scored:
        return Winner(size, None, "no run recorded a validation accuracy (best_val); no winner is picked on test")
    unscored = [g.strategy for g in members if g.n > 0 and g.val_mean is None]
    note = (f"left out of the choice, no validation accuracy recorded: {', '.join(unscored)}" if unscored else "")
    return Winner(size, max(scored, key=lambda g: (g.val_mean, g.n)), note)


def _correct(s: Summary) -> None:
    """Holm over every comparison, and the seeds a 1- and 2-point difference would need at Holm's
    strictest level alpha/m."""
    for c, p in zip(s.comparisons, stats.holm([c.p for c in s.comparisons])):
        c.p_holm = p
        c.significant = p is not None and p < s.alpha
        alpha = s.alpha / max(1, s.m)
        c.seeds_1pt = stats.seeds_needed(c.diff.sd, 0.01, alpha)
        c.seeds_2pt = stats.seeds_needed(c.diff.sd, 0.02, alpha)
