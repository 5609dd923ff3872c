"""Group labels: the strategy name, the settings that vary within it, any other override that differs
between jobs, and the experiment when a summary merges several (``img2txt/linear_probe``)."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

from xfer.report.collect import OVERRIDES, strategy_overrides


def varying_settings(runs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per strategy name, the settings that take more than one value among the runs."""
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in runs:
        strat = r.get("strategy") or {}
        for k, v in strat.items():
            if k != "name":
                seen[strat.get("name", "?")][k].add(json.dumps(v, sort_keys=True))
    return {name: {k for k, vals in settings.items() if len(vals) > 1} for name, settings in seen.items()}


def strategy_label(strat: dict[str, Any], varying: dict[str, set[str]]) -> str:
    name = strat.get("name", "?")
    extras = [f"{k}={strat[k]}" for k in sorted(varying.get(name, ())) if k in strat]
    return f"{name}({', '.join(extras)})" if extras else name


_SETTINGS = re.compile(r"^([\w./-]+)\((.*)\)")


def split_k(label: str) -> tuple[str, int] | None:
    """``freeze_first_k(k=2, reinit_rest=True)`` -> (``freeze_first_k(reinit_rest=True)``, 2): a label that
    carries an integer ``k`` setting, without it, and k; None for other labels."""
    m = _SETTINGS.match(label)
    if not m:
        return None
    settings = [kv.strip() for kv in m.group(2).split(",")]
    k = next((kv[2:] for kv in settings if kv.startswith("k=")), None)
    if k is None or not k.isdigit():
        return None
    rest = ", ".join(kv for kv in settings if not kv.startswith("k="))
    return (f"{m.group(1)}({rest})" if rest else m.group(1)), int(k)


def _parse(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def run_labels(ok: list[dict[str, Any]], failed: list[dict[str, Any]]) -> dict[int, str]:
    """id(run) -> its group label. A failed run records only the strategy name, so its settings come from
    its ``strategy.*`` overrides."""
    varying = varying_settings(ok)
    common = set.intersection(*(set(r[OVERRIDES]) for r in ok)) if ok else set()
    several = len({r.get("experiment") for r in ok + failed if r.get("experiment")}) > 1
    labels = {}
    failed_ids = {id(r) for r in failed}
    for r in ok + failed:
        strat = dict(r.get("strategy") or {})
        if id(r) in failed_ids:
            strat.update({k: _parse(v) for k, v in strategy_overrides(r).items() if k not in strat})
        label = strategy_label(strat, varying)
        own = sorted(o for o in r.get(OVERRIDES, []) if o not in common)
        if own:
            label = f"{label} [{' '.join(own)}]"
        if several and r.get("experiment"):
            label = f"{r['experiment']}/{label}"
        labels[id(r)] = label
    return labels
