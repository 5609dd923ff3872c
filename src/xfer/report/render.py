"""summary.md, summary.csv and comparisons.csv from a Summary: text only, no statistics computed here."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from xfer.report.collect import DIR
from xfer.report.settings import METRICS
from xfer.report.summary import (Comparison, Summary, floor_line, fmt_unit, n_train, transfer_comparisons,
                                 transfer_gain)


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _pts(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:+.2f}"


def _interval(low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"[{_pts(low)}, {_pts(high)}]"


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}"


def _seeds(n: int | str | None) -> str:
    return "–" if n is None else str(n)


def _test_tag(c: Comparison) -> str:
    if c.mcnemar is not None:
        return f" (one unit; McNemar {c.mcnemar:.3g})"
    return {"exact sign-flip (no spread)": " (sign-flip)"}.get(c.test, "")


def protocol(s: Summary) -> str:
    """The two sentences at the top of summary.md: how the winner is picked and how groups are compared."""
    boot = (f"a bootstrap CI (B={s.bootstrap}) over units and class-stratified test examples (whole groups, "
            f"such as movies, when the split is grouped)" if s.bootstrap > 0
            else "no bootstrap (turned off)")
    return (f"Protocol: the winner at each data size is the group with the best mean validation accuracy "
            f"(best checkpoint); its {METRICS[s.metric]} is reported, never used to choose. Every group is compared "
            f"with the reference ({_reference_name(s)}) as a paired difference over the (seed, split_seed) units both "
            f"ran{_contrasts_text(s)}, Holm-corrected together over m={s.m} comparisons, with {boot}.")


def _contrasts_text(s: Summary) -> str:
    made = [f"{c.group.strategy} vs {c.reference.strategy}" for c in s.comparisons if c.contrast]
    return f", plus the planned contrast{'s' if len(made) > 1 else ''} {', '.join(dict.fromkeys(made))}" if made else ""


def _reference_name(s: Summary) -> str:
    found = sorted({g.strategy for g in s.references.values()})
    return ", ".join(found) if found else f"{s.reference}, not found"


def to_markdown(s: Summary, plots: bool = True) -> str:
    """summary.md; ``plots``: whether the figures are written beside it (the transfer-gain plot is linked)."""
    lines = [f"# Sweep summary: {', '.join(map(str, s.folders))}", "", protocol(s), "",
             f"Metric: target {s.metric} (%), mean over units; val: the best checkpoint's validation accuracy (%); "
             "95% CI from Student's t.", "",
             "| group | data | n | failed | val mean | test mean | std | 95% CI |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for g in s.groups:
        ci = "–" if g.ci95 is None else f"[{_pct(g.mean - g.ci95)}, {_pct(g.mean + g.ci95)}]"
        lines.append(f"| {g.strategy} | {g.data} | {g.n} | {g.failed} | {_pct(g.val_mean)} | "
                     f"{_pct(g.mean if g.n else None)} | {_pct(g.std)} | {ci} |")
    lines.append("")
    for size, w in s.winners.items():
        if w.group is None:
            lines.append(f"No winner at data={size}: {w.note}.")
        else:
            g = w.group
            lines.append(f"Winner on validation at data={size}: {g.strategy} (val {_pct(g.val_mean)}%, "
                         f"test {_pct(g.mean)}%, n={g.n})")
    floors = [floor_line(f, size) for size in s.sizes for f in s.floors(size)]
    if floors:
        lines += [""] + [f"{line[0].upper()}{line[1:]}." for line in floors]
    lines += ["", "## Differences from the reference", ""]
    if not s.comparisons:
        lines.append(f"No comparisons: no reference group {s.reference!r} with a partner to compare "
                     "(see the notes)." if not s.references else "No comparisons: the reference is the only group.")
    else:
        alpha = s.alpha / max(1, s.m)
        lines += [f"Group minus reference, in {s.score} points. p: two-sided paired t-test over units (marked "
                  f"where the differences have no spread and the exact sign-flip p is used; one unit gets no "
                  f"p, only McNemar's test of its two models, outside the family); significant: Holm p < {s.alpha:g}. Seeds "
                  f"for 1pt / 2pt: the smallest n with 80% power at alpha/m = {s.alpha:g}/{s.m} = {alpha:.3g} "
                  "(Holm's strictest step), given the observed sd of the differences.", "",
                  "| group vs reference | data | n pairs | diff | 95% t-CI | bootstrap 95% CI | p | Holm p | "
                  "significant | d_z | seeds for 1pt / 2pt |",
                  "|---|---|---:|---:|---|---|---:|---:|---|---:|---|"]
        for c in s.comparisons:
            boot = _interval(*c.boot) if c.boot else (c.boot_note or "–")
            d_z = "–" if c.diff.d_z is None else f"{c.diff.d_z:.2f}"
            lines.append(f"| {c.group.strategy} vs {c.reference.strategy} | {c.data} | {c.n} | {_pts(c.diff.mean)} "
                         f"| {_interval(c.diff.ci_low, c.diff.ci_high)} | {boot} | {_p(c.p)}{_test_tag(c)} | "
                         f"{_p(c.p_holm)} | {'yes' if c.significant else 'no'} | {d_z} | "
                         f"{_seeds(c.seeds_1pt)} / {_seeds(c.seeds_2pt)} |")
        negative = negative_transfer(s)
        if negative:
            lines += [""] + [f"- {n}" for n in negative]
        if plots and transfer_gain(s):
            lines += ["", f"![difference from {_reference_name(s)} against labelled target examples]"
                          "(transfer_gain.png)"]
    notes = _notes(s)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if s.failed:
        title = "Failed or interrupted jobs" if any(r.get("status") == "interrupted" for r in s.failed) else "Failed jobs"
        lines += ["", f"## {title}", "", "| run | strategy | data | seed | error |", "|---|---|---|---:|---|"]
        for r in s.failed:
            lines.append(f"| {Path(r.get(DIR, r.get('run_dir', '?'))).name} | {(r.get('strategy') or {}).get('name')} "
                         f"| {r.get('fraction') if r.get('samples_per_class') is None else r.get('samples_per_class')} "
                         f"| {r.get('seed')} | {r.get('error', '?')} |")
    if s.incomplete:
        lines += ["", "## Incomplete jobs (no results.json yet)", ""] + [f"- {p}" for p in s.incomplete]
    return "\n".join(lines) + "\n"


def _count(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:g}"


def negative_transfer(s: Summary) -> list[str]:
    """One plain line per comparison whose whole 95% t-CI is below zero: transfer that hurts. The CI is not
    corrected for multiplicity, so each line says whether Holm's correction lets the claim stand too."""
    out = []
    for c in transfer_comparisons(s):
        if c.diff.ci_high is None or not c.diff.ci_high < 0:
            continue
        n = n_train(s, c.data)
        where = f"data={c.data}" + ("" if n is None else f" (n_train={_count(n)})")
        holm = (f"it also survives Holm's correction (Holm p = {_p(c.p_holm)} < {s.alpha:g}, m={s.m})"
                if c.significant else
                f"it does not survive Holm's correction (Holm p = {_p(c.p_holm)}, not < {s.alpha:g}, m={s.m}): "
                "a lead to rerun with more seeds, not a finding")
        out.append(f"negative transfer: {c.group.strategy} is worse than {c.reference.strategy} at {where}: "
                   f"{_pts(c.diff.mean)} {s.score} points {_interval(c.diff.ci_low, c.diff.ci_high)} (95% t-CI, "
                   f"uncorrected); {holm}.")
    return out


def _notes(s: Summary) -> list[str]:
    notes = list(s.notes)
    for c in s.comparisons:
        if c.dropped:
            gone = "; ".join(f"{', '.join(map(fmt_unit, us))} ({lab} only)" for lab, us in c.dropped.items())
            notes.append(f"{c.group.strategy} vs {c.reference.strategy} at data={c.data}: paired on the {c.n} shared "
                         f"unit{'s' if c.n != 1 else ''}; dropped {gone}.")
        if c.test == "exact sign-flip (no spread)":
            notes.append(f"{c.group.strategy} vs {c.reference.strategy} at data={c.data}: the same difference on "
                         f"every unit (no spread); p is the exact sign-flip p, 2/2^{c.n} = {c.p:.3g}.")
    missing: dict[str, list[str]] = {}
    for c in s.comparisons:
        if c.boot is None and c.boot_note and c.boot_note != "bootstrap off":
            missing.setdefault(c.boot_note, []).append(f"{c.group.strategy} (data={c.data})")
    for why, which in missing.items():
        notes.append(f"No bootstrap CI ({why}; runs save predictions.npz since it was added): {', '.join(which)}.")
    few = [f"{c.group.strategy} (data={c.data}, n={c.n})" for c in s.comparisons if c.boot is not None and 1 < c.n < 5]
    if few:
        notes.append("With fewer than 5 units the bootstrap has almost no seed-to-seed variation to resample, so "
                     f"its interval is too narrow; read the t-CI: {', '.join(few)}.")
    singles = [f"{g.strategy} (data={g.data})" for g in s.groups if g.n == 1]
    if singles:
        notes.append(f"n=1, no spread and no t-test: {', '.join(singles)}.")
    if any(c.mcnemar is not None for c in s.comparisons):
        notes.append("One shared unit: McNemar's p says whether those two trained models differ on these test "
                     "examples, not whether the strategies do (seed-to-seed variation is unseen); it is not in "
                     "Holm's family and never called significant. Run more seeds.")
    tiny = [f"{c.group.strategy} vs {c.reference.strategy} (data={c.data})" for c in s.comparisons
            if c.diff.sd and c.test == "paired t" and c.diff.sd < _resolution(c)]
    if tiny:
        notes.append("Differences that vary across seeds by less than one test example: the t-test's p rests on "
                     f"near-identical numbers and the sign-flip p (column in comparisons.csv) is the robust one: "
                     f"{', '.join(tiny)}.")
    for size, w in s.winners.items():
        if w.group is not None and w.note:
            notes.append(f"Winner at data={size}: {w.note}.")
    for kept, dropped in s.kept_newest:
        notes.append(f"Duplicate run: kept the newer {kept}, dropped {dropped} (--keep-newest).")
    return notes


def _resolution(c) -> float:
    """One test example, as a share of the test set (the finest step an accuracy difference can take)."""
    sizes = [((r.get("target") or {}).get("sizes") or {}).get("test") for r in c.group.runs.values()]
    sizes = [n for n in sizes if n]
    return 1.0 / max(sizes) if sizes else 0.0


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return repr(float(x)) if isinstance(x, float) else str(x)


def _units(units: list[tuple[int, int]], splits: bool) -> str:
    return " ".join(f"{a}/{b}" if splits else str(a) for a, b in units)


def _splits(s: Summary) -> bool:
    """Whether units are written as seed/split_seed (only when some split_seed is not 0)."""
    return any(u[1] for g in s.groups for u in g.values)


def to_csv(s: Summary) -> str:
    """summary.csv: one row per group."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["strategy", "data", "n", "failed", "val_mean", "mean", "std", "ci95_low", "ci95_high", "seeds"])
    splits = _splits(s)
    for g in s.groups:
        half = g.ci95
        w.writerow([g.strategy, g.data, g.n, g.failed, _num(g.val_mean), _num(g.mean if g.n else None), _num(g.std),
                    _num(None if half is None else g.mean - half), _num(None if half is None else g.mean + half),
                    _units(g.units, splits)])
    return buf.getvalue()


def comparisons_csv(s: Summary) -> str:
    """comparisons.csv: one row per comparison, every number unrounded (accuracy as a fraction)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["group", "reference", "data", "n_pairs", "units", "dropped_units", "diff", "sd", "ci95_low",
                "ci95_high", "boot_low", "boot_high", "boot_note", "p", "test", "p_holm", "p_sign_flip", "p_mcnemar",
                "significant", "d_z", "seeds_1pt", "seeds_2pt"])
    splits = _splits(s)
    for c in s.comparisons:
        d = c.diff
        dropped = "; ".join(f"{lab}: {_units(us, splits)}" for lab, us in c.dropped.items())
        boot = c.boot or (None, None)
        w.writerow([c.group.strategy, c.reference.strategy, c.data, c.n, _units(c.units, splits), dropped,
                    _num(d.mean), _num(d.sd), _num(d.ci_low), _num(d.ci_high), _num(boot[0]), _num(boot[1]),
                    c.boot_note, _num(c.p), c.test, _num(c.p_holm), _num(d.p_sign_flip), _num(c.mcnemar),
                    "yes" if c.significant else "no", _num(d.d_z), _num(c.seeds_1pt), _num(c.seeds_2pt)])
    return buf.getvalue()
