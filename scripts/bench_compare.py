"""Put two `make bench` runs side by side: one row per figure, before, after, and after / before.

    python scripts/bench_compare.py docs/bench/before-363316e.json docs/bench/bench.json

Each file is a `bench.json` that `scripts/bench.py` wrote. A figure one run lacks (a section it did not
run, or an older bench that did not measure it) shows as "-". The two runs should be made back to back on
the same machine: the header names each run's machine and date, and says so when they differ.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (measure, path into bench.json, format, goal). A path is a tuple of keys; a callable takes the whole run.
Getter = tuple[str, ...] | Callable[[dict[str, Any]], Any]
ROWS: list[tuple[str, Getter, str, str]] = [
    ("Launch to first step, warm (s)", ("startup", "median_s", "first_step"), "{:.2f}", ""),
    ("`python -c \"import torch\"`, same run (s)", ("startup", "median_s", "torch"), "{:.2f}", ""),
    ("first step / `import torch`", ("startup", "first_step_over_torch"), "{:.2f}x", "<= 2.00x"),
    ("first step / a bare PyTorch training process (import torch, AdamW, one step)",
     ("startup", "first_step_over_torch_step"), "{:.2f}x", ""),
    ("`import xfer.pipeline` (s)", ("startup", "median_s", "xfer"), "{:.2f}", ""),
    ("Resident memory after `import xfer.pipeline` over `import torch` (MiB)", ("startup", "rss_over_torch_mib"),
     "+{:.0f}", "<= +150"),
    ("same, a bare PyTorch training process (import torch, an AdamW, one step) (MiB)",
     ("startup", "rss_over_torch_step_mib"), "+{:.0f}", ""),
    ("Resident memory of the warm run after its first step over a bare training process after its step (MiB)",
     ("startup", "first_step_rss_over_torch_step_mib"), "+{:.0f}", "<= +150"),
    ("Epoch scores: MetricCollection's extra cost over models/scores.py, share of a target step",
     lambda r: _pct(r, ("metrics", "extra_share")), "{:+.1f}%", "<= +2.0%"),
    ("Lightning / plain loop, img2txt target stage, wall time", ("lightning", "ratio"), "{:.3f}", ""),
    ("same, training steps alone", ("lightning", "train_ratio"), "{:.3f}", ""),
    ("Lightning's own cost per step (ms)", ("lightning", "framework", "overhead_ms_per_step"), "{:.2f}", ""),
    ("Target-stage training throughput, batch 64 (samples/s)", ("throughput", "samples_per_s"), "{:.0f}", ""),
    ("same, share of fp32 matmul", lambda r: _pct(r, ("throughput", "share_of_matmul")), "{:.0f}%", ""),
    *[row for size in ("32", "64") for row in (
        (f"resnet18 {size}x{size}, bare step, contiguous (samples/s)",
         ("backbones", "sizes", size, "samples_per_s", "contiguous"), "{:.0f}", ""),
        (f"resnet18 {size}x{size}, bare step, channels-last (samples/s)",
         ("backbones", "sizes", size, "samples_per_s", "channels_last"), "{:.0f}", ""),
        (f"resnet18 {size}x{size}, share of fp32 matmul (faster layout)",
         lambda r, s=size: _pct(r, ("backbones", "sizes", s, "share_of_matmul")), "{:.0f}%", ">= 40%"),
    )],
    ("resnet18 32x32, Lightning / plain loop, wall time", ("backbones", "lightning", "ratio"), "{:.3f}",
     "<= 1.05"),
    ("same, training steps alone", ("backbones", "lightning", "train_ratio"), "{:.3f}", ""),
    ("Train loader alone (batches/s)", ("data", "batches_per_s"), "{:.0f}", ""),
    ("`train.py experiment=img2txt`, cold (s)", ("e2e", "cold_s"), "{:.1f}", ""),
    ("same, warm: cached trunk (s)", ("e2e", "warm_s"), "{:.1f}", ""),
    ("same, warm: first step after (s)", ("e2e", "warm_first_step_s"), "{:.1f}", ""),
    ("Peak RSS, one run (MiB)", ("e2e", "peak_rss_mb"), "{:.0f}", ""),
    ("Sweep, 8 jobs, basic launcher (s)", ("sweep", "sequential_s"), "{:.0f}", ""),
    ("same, joblib, 2 jobs at a time (s)", ("sweep", "joblib_s"), "{:.0f}", ""),
    ("Per-job overhead, basic launcher: in the job, outside training (s)",
     ("sweep", "overhead", "sequential", "in_job_s"), "{:.1f}", ""),
    ("same, outside any job: start-up, launcher (s)", ("sweep", "overhead", "sequential", "outside_s"),
     "{:.1f}", ""),
    ("Per-job overhead, joblib: in the job, outside training (s)", ("sweep", "overhead", "joblib", "in_job_s"),
     "{:.1f}", ""),
    ("same, outside any job: start-up, launcher (s)", ("sweep", "overhead", "joblib", "outside_s"), "{:.1f}", ""),
    ("Peak RSS, joblib sweep, 2 jobs at a time: all processes (MiB)", ("sweep", "peak_rss_mb"), "{:.0f}", ""),
    ("same, the largest process (MiB)", ("sweep", "peak_rss_single_mb"), "{:.0f}", ""),
]


def _get(run: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = run
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _pct(run: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value = _get(run, path)
    return None if value is None else 100 * value


def value(run: dict[str, Any], getter: Getter) -> float | None:
    got = getter(run) if callable(getter) else _get(run, getter)
    return got if isinstance(got, (int, float)) and not isinstance(got, bool) else None


def machine_line(name: str, run: dict[str, Any]) -> str:
    m = run.get("machine", {})
    quick = " (--quick: checks the bench, not the speed)" if run.get("quick") else ""
    return (f"{name}: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')}, "
            f"{m.get('threads', '?')} threads; {m.get('date', '?')}{quick}")


def compare(before: dict[str, Any], after: dict[str, Any], names: tuple[str, str] = ("before", "after")) -> str:
    """The Markdown table: a header line per run, then one row per figure either run has."""
    lines = [machine_line(names[0], before), machine_line(names[1], after)]
    mb, ma = before.get("machine", {}), after.get("machine", {})
    if (mb.get("cpu"), mb.get("cores")) != (ma.get("cpu"), ma.get("cores")):
        lines.append("**The two runs are from different machines: their figures do not compare.**")
    lines += ["", f"| measure | {names[0]} | {names[1]} | {names[1]} / {names[0]} | goal |", "|---|---:|---:|---:|---|"]
    for label, getter, fmt, goal in ROWS:
        b, a = value(before, getter), value(after, getter)
        if b is None and a is None:
            continue
        ratio = f"{a / b:.2f}" if a is not None and b not in (None, 0) else "-"
        cells = [fmt.format(v) if v is not None else "-" for v in (b, a)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} | {goal} |")
    return "\n".join(lines)


def load(path: Path) -> dict[str, Any] | None:
    """A bench.json as a dict; None, with a one-line error on stderr, when it is not one."""
    try:
        run = json.loads(path.read_text())
    except FileNotFoundError:
        why = "no such file"
    except OSError as err:
        why = f"cannot read it ({err.strerror})"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        why = f"not JSON ({err})"
    else:
        if isinstance(run, dict) and isinstance(run.get("machine"), dict):
            return run
        why = "JSON, but not a bench.json (no 'machine')"
    print(f"error: {path}: {why}; allowed: a bench.json written by scripts/bench.py", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the earlier run's bench.json")
    parser.add_argument("after", type=Path, help="the later run's bench.json")
    parser.add_argument("--names", default="before,after", help="the two columns' names (default before,after)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    names = tuple(n.strip() for n in args.names.split(","))
    if len(names) != 2 or not all(names):
        print(f"error: --names {args.names!r}; allowed: two names, comma-separated", file=sys.stderr)
        return 2
    runs = [load(p) for p in (args.before, args.after)]
    if None in runs:
        return 2
    text = compare(runs[0], runs[1], names)  # type: ignore[arg-type]
    print(text)
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from xfer.io import atomic_write_bytes

        try:
            atomic_write_bytes(args.out, (text + "\n").encode())
        except OSError as err:
            print(f"error: --out {args.out}: cannot write there ({err.strerror}); allowed: a file in a writable "
                  "folder", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
