"""Aggregate a sweep's runs into a summary: mean, std, 95% CI and n per group, the winner, whether its
lead over scratch is significant, and plots. Reads only results.json files (and TensorBoard events for
learning curves), so it works on any folder of runs: a finished sweep, a partial one, a cluster's."""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

from xfer.io import atomic_write_bytes

METRIC = "test/acc"
ALPHA = 0.05


@dataclass
class Group:
    strategy: str
    fraction: Any
    values: dict[int, float] = field(default_factory=dict)  # seed -> test accuracy

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values.values()) / self.n

    @property
    def std(self) -> float:
        if self.n < 2:
            return float("nan")
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values.values()) / (self.n - 1))

    @property
    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the mean (Student t)."""
        if self.n < 2:
            return float("nan")
        return float(stats.t.ppf(0.975, self.n - 1)) * self.std / math.sqrt(self.n)


@dataclass
class Summary:
    groups: list[Group]
    failed: list[dict[str, Any]]
    incomplete: list[str]
    comparisons: dict[Any, dict[str, Any]]  # fraction -> winner and its test against scratch
    runs: list[dict[str, Any]]


def collect(folder: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All results.json under ``folder``, and the job folders that have none yet (running or killed)."""
    folder = Path(folder)
    runs, incomplete = [], []
    for path in sorted(folder.rglob("results.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            incomplete.append(str(path.parent))
    done = {str(Path(r.get("run_dir", "")).resolve()) for r in runs}
    for cfg in sorted(folder.rglob(".hydra/config.yaml")):
        job = cfg.parent.parent
        if str(job.resolve()) not in done and not (job / "results.json").exists():
            incomplete.append(str(job))
    return runs, incomplete


def strategy_label(run: dict[str, Any], varying: dict[str, set[str]]) -> str:
    strat = run.get("strategy") or {}
    name = strat.get("name", "?")
    extras = [f"{k}={strat[k]}" for k in sorted(varying.get(name, ())) if k in strat]
    return f"{name}({', '.join(extras)})" if extras else name


def _varying_settings(runs: list[dict[str, Any]]) -> dict[str, set[str]]:
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in runs:
        strat = r.get("strategy") or {}
        for k, v in strat.items():
            if k != "name":
                seen[strat.get("name", "?")][k].add(json.dumps(v, sort_keys=True))
    return {name: {k for k, vals in settings.items() if len(vals) > 1} for name, settings in seen.items()}


def data_size(run: dict[str, Any]) -> Any:
    spc = run.get("samples_per_class")
    return f"{spc}/class" if spc else run.get("fraction")


# overrides already shown as the strategy, the data size or the seed
_SHOWN = ("strategy", "seed", "target.fraction", "target.samples_per_class", "experiment", "sweep",
          "hparams_search", "hydra/launcher", "hydra.launcher", "hydra.sweeper")


def _overrides(run: dict[str, Any]) -> list[str]:
    path = Path(run.get("run_dir", "")) / ".hydra" / "overrides.yaml"
    try:
        items = [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("- ")]
    except OSError:
        return []
    return [o.strip("'\"") for o in items if not o.strip("'\"").lstrip("+~").startswith(_SHOWN)]


def summarize(folder: str | Path) -> Summary:
    runs, incomplete = collect(folder)
    ok = [r for r in runs if r.get("status") == "ok"]
    failed = [r for r in runs if r.get("status") != "ok"]
    varying = _varying_settings(ok)
    # any other override that differs between jobs (a hand-made lr sweep, Optuna's trials) splits groups
    extra = {id(r): _overrides(r) for r in ok}
    common = set.intersection(*(set(v) for v in extra.values())) if extra else set()
    by_key: dict[tuple[str, Any], Group] = {}
    for r in ok:
        label, size = strategy_label(r, varying), data_size(r)
        own = [o for o in extra[id(r)] if o not in common]
        if own:
            label = f"{label} [{' '.join(sorted(own))}]"
        group = by_key.setdefault((label, size), Group(label, size))
        seed = int(r["seed"])
        while seed in group.values:  # same seed twice in a group: keep both runs
            seed += 1_000_000
        group.values[seed] = float(r["target"]["test"][METRIC])
    groups = sorted(by_key.values(), key=lambda g: (str(g.fraction), -g.mean))
    return Summary(groups, failed, incomplete, _compare(groups), ok)


def _compare(groups: list[Group]) -> dict[Any, dict[str, Any]]:
    """Per data size: the best strategy, and a t-test of its lead over scratch (paired by seed when
    both have the same seeds, else Welch's)."""
    out: dict[Any, dict[str, Any]] = {}
    for size in sorted({g.fraction for g in groups}, key=str):
        members = [g for g in groups if g.fraction == size]
        winner = max(members, key=lambda g: g.mean)
        scratch = next((g for g in members if g.strategy == "scratch"), None)
        verdict: dict[str, Any] = {"winner": winner.strategy, "mean": winner.mean, "n": winner.n}
        if scratch is not None and scratch is not winner and winner.n >= 2 and scratch.n >= 2:
            common = sorted(set(winner.values) & set(scratch.values))
            if len(common) >= 2 and len(common) == winner.n == scratch.n:
                test = stats.ttest_rel([winner.values[s] for s in common], [scratch.values[s] for s in common])
                kind = "paired t-test over seeds"
            else:
                test = stats.ttest_ind(list(winner.values.values()), list(scratch.values.values()), equal_var=False)
                kind = "Welch t-test"
            p = float(test.pvalue)
            verdict.update({"lead": winner.mean - scratch.mean, "p": p, "test": kind,
                            "significant": bool(p < ALPHA and winner.mean > scratch.mean)})
        elif scratch is winner:
            verdict["note"] = "scratch itself is the best"
        else:
            verdict["note"] = "no scratch runs with n >= 2 to compare against"
        out[size] = verdict
    return out


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}"


def to_markdown(s: Summary, folder: Path) -> str:
    lines = [f"# Sweep summary: {folder}", "", f"Metric: target {METRIC} (%), mean over seeds; 95% CI from Student's t.", ""]
    lines += ["| strategy | data | n | mean | std | 95% CI |", "|---|---|---:|---:|---:|---:|"]
    for g in s.groups:
        ci = "–" if math.isnan(g.ci95) else f"[{_pct(g.mean - g.ci95)}, {_pct(g.mean + g.ci95)}]"
        lines.append(f"| {g.strategy} | {g.fraction} | {g.n} | {_pct(g.mean)} | {_pct(g.std)} | {ci} |")
    lines.append("")
    for size, v in s.comparisons.items():
        head = f"**Winner at data={size}: {v['winner']}** ({_pct(v['mean'])}%, n={v['n']})."
        if "p" in v:
            sig = "significant" if v["significant"] else "not significant"
            head += (f" Lead over scratch: {100 * v['lead']:+.1f} points, p={v['p']:.3g} ({v['test']}): "
                     f"{sig} at {ALPHA}.")
        else:
            head += f" {v['note'].capitalize()}."
        lines.append(head)
    if s.failed:
        lines += ["", "## Failed jobs", "", "| run | strategy | seed | error |", "|---|---|---:|---|"]
        for r in s.failed:
            lines.append(f"| {Path(r.get('run_dir', '?')).name} | {(r.get('strategy') or {}).get('name')} | "
                         f"{r.get('seed')} | {r.get('error', '?')} |")
    if s.incomplete:
        lines += ["", "## Incomplete jobs (no results.json yet)", ""] + [f"- {p}" for p in s.incomplete]
    return "\n".join(lines) + "\n"


def to_csv(s: Summary) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["strategy", "data", "n", "mean", "std", "ci95_low", "ci95_high", "seeds"])
    for g in s.groups:
        w.writerow([g.strategy, g.fraction, g.n, f"{g.mean:.6f}", f"{g.std:.6f}",
                    f"{g.mean - g.ci95:.6f}", f"{g.mean + g.ci95:.6f}", " ".join(map(str, sorted(g.values)))])
    for r in s.failed:
        w.writerow([(r.get("strategy") or {}).get("name"), data_size(r), 0, "", "", "", "",
                    f"FAILED seed={r.get('seed')}: {r.get('error')}"])
    return buf.getvalue()


def write_summary(folder: str | Path, plots: bool = True) -> Summary:
    folder = Path(folder)
    s = summarize(folder)
    atomic_write_bytes(folder / "summary.md", to_markdown(s, folder).encode())
    atomic_write_bytes(folder / "summary.csv", to_csv(s).encode())
    if plots and s.groups:
        from xfer.plots import write_plots

        write_plots(s, folder)
    return s
