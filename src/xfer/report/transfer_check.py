"""Would the cheap scores have chosen well? The transferability reports of a sweep's source trunks
(``<sweep>/transfer/seed<k>/transfer.json``, written by ``python analyze.py transfer multirun=<sweep>`` and
at the end of a sweep) beside the accuracies the sweep observed at the same depths, with Kendall's tau per score.

Depth k pairs with ``freeze_first_k`` / ``transfer_first_k`` at ``strategy.k=k`` (the first k blocks
transferred). Tau is computed on the means over seeds, its 95% CI by resampling the seeds both sides share
(seed k's scores belong to the trunk seed k's runs started from). The check reads test accuracy because
that is what it checks against; nothing here selects anything.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from xfer.report.labels import split_k
from xfer.report.summary import Group, Summary

SCORE_KEYS = {"logme": "LogME", "h_score": "H-score", "knn_acc": "k-NN", "probe_acc": "probe"}
FAMILIES = ("freeze_first_k", "transfer_first_k")


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b (ties in either variable corrected); None when one side is constant."""
    conc = disc = tie_x = tie_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tie_x += 1
            elif dy == 0:
                tie_y += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tie_x) * (conc + disc + tie_y))
    return None if denom == 0 else (conc - disc) / denom


def layer_k(label: str) -> tuple[str, int] | None:
    """``freeze_first_k(k=2, ...)`` -> (``freeze_first_k``, 2); None for other labels."""
    found = split_k(label)
    if not found:
        return None
    family = found[0].split("(")[0].rsplit("/", 1)[-1]  # without the experiment prefix and other settings
    return (family, found[1]) if family in FAMILIES else None


def read_reports(folder: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for path in sorted(Path(folder).glob("transfer/seed*/transfer.json")):
        report = json.loads(path.read_text())
        out[int(report["seed"])] = report
    return out


def _trained(report: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in report["variants"] if v["name"] != "random")


def check(s: Summary, reports: dict[int, dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per family (freeze_first_k, transfer_first_k) and score: the depths, mean score and mean test accuracy
    per depth, tau and its seed-bootstrap CI."""
    seeds = sorted(reports)
    scored = {d["depth"] for d in _trained(reports[seeds[0]])["depths"]}
    per_seed: dict[str, dict[int, dict[int, float]]] = {k: {} for k in SCORE_KEYS}  # score -> seed -> depth -> value
    for sd in seeds:
        for d in _trained(reports[sd])["depths"]:
            for k in SCORE_KEYS:
                per_seed[k].setdefault(sd, {})[d["depth"]] = float(d[k])
    families: dict[str, dict[int, Group]] = {}
    for g in s.groups:
        found = layer_k(g.strategy)
        if found and len(s.sizes) == 1 and found[1] in scored:
            families.setdefault(found[0], {})[found[1]] = g
    out: dict[str, Any] = {"seeds": seeds, "families": {}}
    rng = np.random.default_rng(seed)
    for family, by_depth in sorted(families.items()):
        depths = sorted(by_depth)
        acc = {k: {u[0]: v for u, v in by_depth[k].values.items()} for k in depths}  # depth -> seed -> test acc
        shared = [sd for sd in seeds if all(sd in acc[k] for k in depths)]
        rows = {"depths": depths, "acc": [float(np.mean(list(acc[k].values()))) for k in depths], "scores": {}}
        for key in SCORE_KEYS:
            mean_score = [float(np.mean([per_seed[key][sd][k] for sd in seeds])) for k in depths]
            tau = kendall_tau(mean_score, rows["acc"]) if len(depths) >= 3 else None
            low = high = None
            if tau is not None and len(shared) >= 2:
                boots = []
                for _ in range(n_boot):
                    pick = rng.choice(shared, size=len(shared), replace=True)
                    t = kendall_tau([float(np.mean([per_seed[key][sd][k] for sd in pick])) for k in depths],
                                    [float(np.mean([acc[k][sd] for sd in pick])) for k in depths])
                    if t is not None:
                        boots.append(t)
                if boots:
                    low, high = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
            best_score = depths[int(np.argmax(mean_score))]
            rows["scores"][key] = {"mean": mean_score, "tau": tau, "ci": [low, high], "picks": best_score}
        val = [by_depth[k].val_mean for k in depths]
        rows["val_picks"] = depths[int(np.nanargmax([np.nan if v is None else v for v in val]))] \
            if any(v is not None for v in val) else None
        out["families"][family] = rows
    return out


# strategies that train a head on the frozen trunk's top features: which scored trunk each one reads
FROZEN = {"linear_probe": "source-trained", "frozen_random": "random"}


def _variant(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((v for v in report["variants"] if (v["name"] == "random") == (name == "random")), None)


def check_frozen(s: Summary, reports: dict[int, dict[str, Any]], n_boot: int = 2000, seed: int = 0
                 ) -> dict[Any, dict[str, Any]]:
    """Per data size: the strategies that read the frozen trunk's top features (linear_probe: the
    source-trained trunk; frozen_random: the random one), each seed's top-depth score beside that run's test
    accuracy, and Kendall's tau-b over every (strategy, seed) unit, its 95% CI by resampling the seeds."""
    out: dict[Any, dict[str, Any]] = {}
    rng = np.random.default_rng(seed)
    for size in s.sizes:
        groups = {g.name: g for g in s.groups if g.data == size and g.name in FROZEN and g.strategy == g.name}
        if len(groups) < 2:
            continue
        units = {name: {u[0]: v for u, v in g.values.items() if u[0] in reports} for name, g in groups.items()}
        seeds = sorted(set.intersection(*(set(v) for v in units.values())))
        if not seeds:
            continue
        names = sorted(groups)
        top = {(name, sd): _variant(reports[sd], FROZEN[name])["depths"][-1] for name in names for sd in seeds}
        rows: dict[str, Any] = {"strategies": names, "seeds": seeds, "scores": {},
                                "acc": {n: float(np.mean([units[n][sd] for sd in seeds])) for n in names},
                                "val": {n: groups[n].val_mean for n in names}}
        for key in SCORE_KEYS:
            def tau_of(pick: Any) -> float | None:
                items = [(top[(n, sd)][key], units[n][sd]) for sd in pick for n in names]
                return kendall_tau([a for a, _ in items], [b for _, b in items])

            tau = tau_of(seeds)
            boots = [t for t in (tau_of(rng.choice(seeds, size=len(seeds), replace=True)) for _ in range(n_boot))
                     if t is not None] if tau is not None and len(seeds) >= 2 else []
            ci = [float(v) for v in np.percentile(boots, [2.5, 97.5])] if boots else [None, None]
            mean = {n: float(np.mean([top[(n, sd)][key] for sd in seeds])) for n in names}
            best = [n for n in names if mean[n] == max(mean.values())]
            rows["scores"][key] = {"mean": mean, "tau": tau, "ci": ci, "picks": best[0] if len(best) == 1 else "a tie"}
        vals = {n: v for n, v in rows["val"].items() if v is not None}
        rows["val_picks"] = max(vals, key=vals.get) if len(vals) == len(names) else None
        out[size] = rows
    return out


def _tau(r: dict[str, Any]) -> str:
    if r["tau"] is None:
        return "n/a"
    return f"{r['tau']:+.2f}" + ("" if r["ci"][0] is None else f" [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]")


def _frozen_markdown(found: dict[Any, dict[str, Any]]) -> list[str]:
    lines = ["", "### Frozen trunks: linear_probe (source-trained) and frozen_random (random)", "",
             "Each seed's score of its trunk at the top depth beside that seed's test accuracy; tau over every "
             "(strategy, seed) unit. The scores read up to analysis.transfer.max_train examples of the full "
             "training split, whatever the data size trained on."]
    for size, rows in found.items():
        head = ["strategy", *SCORE_KEYS.values(), "test acc (%)"]
        lines += ["", f"data={size} (seeds {', '.join(map(str, rows['seeds']))}):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in rows["strategies"]:
            lines.append("| " + " | ".join([n, *[f"{rows['scores'][k]['mean'][n]:.4g}" for k in SCORE_KEYS],
                                           f"{100 * rows['acc'][n]:.1f}"]) + " |")
        lines.append("| Kendall tau with test acc [95% CI, seeds resampled] | "
                     + " | ".join(_tau(r) for r in rows["scores"].values()) + " | |")
        picks = ", ".join(f"{SCORE_KEYS[k]} {r['picks']}" for k, r in rows["scores"].items())
        val = rows["val_picks"]
        lines += ["", f"Each score would choose: {picks}" + (f"; validation chooses {val}." if val else ".")]
    return lines


def markdown(s: Summary, folder: Path) -> str:
    """The section of summary.md; empty when the sweep folder holds no transferability reports."""
    reports = read_reports(folder)
    if not reports:
        return ""
    c = check(s, reports)
    first = reports[c["seeds"][0]]
    lines = ["", "## Transferability scores against what the sweep measured", "",
             f"Scores of the source-trained trunk per depth, before any fine-tuning (mean over seeds "
             f"{', '.join(map(str, c['seeds']))}; files in transfer/seed<k>/, recomputed by `python analyze.py "
             f"transfer multirun={folder}`): {_trained(first)['feeding']}. Priors to check, not verdicts."]
    frozen = check_frozen(s, reports)
    if not c["families"] and not frozen:
        lines += ["", "No strategy in this sweep reads the scored features as they are (freeze_first_k / "
                  "transfer_first_k at the scored depths, with one data size; or linear_probe beside frozen_random), "
                  "so there is nothing to rank the scores against. The source-trained trunk's scores per depth (mean "
                  "over seeds; its random control's in transfer/seed<k>/transfer.md):", ""]
        lines += _scores_table(reports)
        return "\n".join(lines) + "\n"
    for family, rows in c["families"].items():
        head = ["depth k", *SCORE_KEYS.values(), f"{family} test acc (%)"]
        lines += ["", f"### {family}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, k in enumerate(rows["depths"]):
            lines.append("| " + " | ".join([str(k), *[f"{rows['scores'][key]['mean'][i]:.4g}" for key in SCORE_KEYS],
                                           f"{100 * rows['acc'][i]:.1f}"]) + " |")
        lines.append("| Kendall tau with test acc [95% CI, seeds resampled] | " + " | ".join(
            "n/a" if r["tau"] is None else (f"{r['tau']:+.2f}" + ("" if r["ci"][0] is None else
                                                               f" [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"))
            for r in rows["scores"].values()) + " | |")
        picks = ", ".join(f"{SCORE_KEYS[key]} k={r['picks']}" for key, r in rows["scores"].items())
        val = rows["val_picks"]
        lines += ["", f"Depth each score would choose: {picks}; validation chooses k={val}." if val is not None else
                  f"Depth each score would choose: {picks}."]
        if len(rows["depths"]) < 5:
            lines.append(f"Tau over {len(rows['depths'])} depths takes few values: read it with its CI.")
    if frozen:
        lines += _frozen_markdown(frozen)
    return "\n".join(lines) + "\n"


def _scores_table(reports: dict[int, dict[str, Any]]) -> list[str]:
    seeds = sorted(reports)
    depths = [d["depth"] for d in _trained(reports[seeds[0]])["depths"]]
    head = ["depth k", *SCORE_KEYS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, k in enumerate(depths):
        means = [float(np.mean([_trained(reports[sd])["depths"][i][key] for sd in seeds])) for key in SCORE_KEYS]
        lines.append("| " + " | ".join([str(k), *[f"{m:.4g}" for m in means]]) + " |")
    return lines
