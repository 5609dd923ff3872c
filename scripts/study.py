"""Run a study (the fixed sweeps of conf/study/<preset>.yaml), then write its results page from them.

    python scripts/study.py [study=cpu|full|smoke] [--dry-run] [--out docs/results.md] [--only CELL,...]

Each cell is one ``python train.py -m`` sweep into ``<XFER_HOME>/logs/study/<preset>/<cell>/``; a cell whose
study.json records the same command with every job ok is skipped, and a cell that was interrupted is rerun
into its folder with ``resume=last``, which leaves its finished jobs alone. ``--dry-run`` prints the commands
and job counts and runs nothing. The page (``docs/results.md`` by default) is written from the folders alone.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from xfer.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]


def load(preset: str) -> dict:
    from omegaconf import OmegaConf

    path = ROOT / "conf" / "study" / f"{preset}.yaml"
    if not path.is_file():
        allowed = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "study").glob("*.yaml")))
        print(f"error: study={preset}: no conf/study/{preset}.yaml; allowed: {allowed}", file=sys.stderr)
        raise SystemExit(2)
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _values(value: str) -> list[str]:
    """The comma list of a sweep override's value, commas inside [...] or {...} kept (a list is one value)."""
    out, depth, cur = [], 0, ""
    for ch in value:
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [*out, cur]


def jobs(args: list[str]) -> int:
    """How many jobs a sweep's comma lists make (sweep= files not counted: name the values in the cell)."""
    return math.prod(len(_values(a.split("=", 1)[1])) for a in args if "=" in a)


def sweeps(cell: dict, seeds: list[int], launcher: list[str] = ()) -> list[tuple[str, list[str]]]:
    """(folder name, train.py -m arguments) of each sweep of a cell: its own, then its ``extra`` sweeps (a
    text baseline, a self-transfer control, another source), which take the cell's other settings too unless
    ``inherit: false``. A cell's ``seeds`` replace the preset's; the preset's ``launcher`` arguments go last."""
    seed_arg = "seed=" + ",".join(str(s) for s in cell.get("seeds", seeds))
    out = [(cell["id"], [*cell["args"], seed_arg, *launcher])]
    for extra in cell.get("extra", []):
        inherited = ([a for a in cell["args"] if not a.startswith(("experiment=", "strategy="))]
                     if extra.get("inherit", True) else [])
        out.append((f"{cell['id']}_{extra['name']}", [*extra["args"], *inherited, seed_arg, *launcher]))
    return out


def sweep_misuse(args: list[str]) -> str | None:
    """A ``strategy.<key>=<one value>`` beside a sweep over ``strategy=``: Hydra composes the sweep's config
    before any strategy is chosen, so the key is unknown there and the whole sweep stops. ``choice(v)`` makes
    it a one-value sweep, applied per job."""
    if not any(a.startswith("strategy=") and len(_values(a.split("=", 1)[1])) > 1 for a in args):
        return None
    for a in args:
        key, _, value = a.partition("=")
        if key.startswith("strategy.") and len(_values(value)) == 1 and not value.startswith("choice("):
            return f"{a} beside a sweep over strategy=; write {key}=choice({value})"
    return None


def missing_data(cell: dict) -> list[str]:
    """The ``needs`` paths of a cell's extra sweeps that this machine lacks (Debian's Fashion-MNIST)."""
    return [e["needs"] for e in cell.get("extra", []) if e.get("needs") and not Path(e["needs"]).exists()]


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def finished(folder: Path, expected: int) -> bool:
    ok = 0
    for path in folder.glob("*/results.json"):
        try:
            ok += json.loads(path.read_text()).get("status") == "ok"
        except (OSError, ValueError):
            pass
    return ok >= expected


def run_sweep(args: list[str], folder: Path, log) -> tuple[int, float]:
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *args, f"hydra.sweep.dir={folder}"]
    if any(folder.glob("*/.hydra/config.yaml")):
        cmd.append("resume=last")  # continue into the same folder: finished jobs are left alone
    start = time.perf_counter()
    with open(log, "a") as out:
        code = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="study=cpu", help="study=<preset> (conf/study/), default cpu")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and job counts; run nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md", help="the page written")
    parser.add_argument("--only", default="", help="cells to run, comma-separated (the page covers all)")
    a = parser.parse_args(argv)
    if not a.study.startswith("study="):
        print(f"error: {a.study!r}; allowed: study=<preset>, e.g. study=cpu", file=sys.stderr)
        return 2
    preset = a.study.split("=", 1)[1]
    spec = load(preset)
    home = Path(os.environ.get("XFER_HOME", ROOT))
    root = home / "logs" / "study" / preset
    only = {c for c in a.only.split(",") if c}
    unknown = only - {c["id"] for c in spec["cells"]}
    if unknown:
        print(f"error: --only {','.join(sorted(unknown))}: no such cell; allowed: "
              f"{', '.join(c['id'] for c in spec['cells'])}", file=sys.stderr)
        return 2
    for cell in spec["cells"]:
        for name, args in sweeps(cell, spec["seeds"], spec.get("launcher", [])):
            bad = sweep_misuse(args)
            if bad:
                print(f"error: study={preset}, cell {name}: {bad}", file=sys.stderr)
                return 2
    total = 0
    if not a.dry_run:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(root / "study.json", json.dumps(spec, indent=1).encode())  # the page's cell list
    for cell in spec["cells"]:
        if only and cell["id"] not in only:
            continue
        skip = {f"{cell['id']}_{e['name']}" for e in cell.get("extra", []) if e.get("needs") in missing_data(cell)}
        for name, args in sweeps(cell, spec["seeds"], spec.get("launcher", [])):
            folder = root / name
            n = jobs(args)
            command = " ".join(["python train.py -m", *args, f"hydra.sweep.dir={folder}"])
            if name in skip:
                print(f"{name}: skipped ({n} jobs): needs {', '.join(missing_data(cell))}, not on this machine")
                continue
            total += n
            meta_file = folder / "study.json"
            if a.dry_run:
                print(f"{name}: {n} jobs: {command}")
                continue
            meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
            if meta.get("command") == command and finished(folder, n):
                print(f"{name}: done ({n} jobs, {meta.get('wall_s', 0) / 60:.1f} min at {meta.get('commit')})")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            print(f"{name}: {n} jobs ...", flush=True)
            code, wall = run_sweep(args, folder, folder / "study.log")
            if code != 0 or not finished(folder, n):
                print(f"error: cell {name} did not finish (exit {code}); see {folder / 'study.log'}, then run "
                      f"make study again: finished jobs are kept", file=sys.stderr)
                return 1
            meta = {"command": command, "commit": commit(), "wall_s": meta.get("wall_s", 0.0) + wall,
                    "jobs": n, "finished_unix": time.time()}
            atomic_write_bytes(meta_file, json.dumps(meta, indent=1).encode())
            print(f"{name}: {n} jobs in {wall / 60:.1f} min", flush=True)
    if a.dry_run:
        print(f"{total} jobs in all")
        return 0
    from xfer.report.study import write_page

    print(f"wrote {write_page(root, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
