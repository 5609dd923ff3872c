"""docs/results.md from a study's sweep folders alone: every number in it is read from results.json files
through the summary (paired seeds, Holm-corrected within each cell), never typed.

A cell is one table, made of one sweep (``logs/study/<preset>/<cell>/``) and its extra sweeps
(``<cell>_<name>/``: a text baseline, a self-transfer control, another source), merged. Each sweep folder
holds ``study.json`` (its command, commit and wall time); ``logs/study/<preset>/study.json`` holds the preset
(the cells, their titles and questions). The page opens with one answer per question, each naming its table,
its effect size with the 95% CI and its Holm-adjusted p; then a table per cell, with its plots; then how to
rerun each cell. ``write_page`` also writes each cell's full summary (summary.md, the CSVs, the plots) into
``<page folder>/results/<preset>/<cell>/``, so that what the page cites is committed beside it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from xfer.io import atomic_write_bytes
from xfer.report.plots import plot_layers_with_scores
from xfer.report.settings import DEFAULT_CONTRASTS, DEFAULT_REFERENCE
from xfer.report.summary import Comparison, Summary, floor_line, summarize
from xfer.report.transfer_check import read_reports
from xfer.report.write import write_summary

QUESTIONS = {
    "image_to_text": "Does an image-trained network help a text task at all?",
    "transfer_pays": "When does transfer pay?",
    "which_layers": "How to choose the shared and the specific layers?",
    "how_to_finetune": "How to fine-tune?",
}
META = "study.json"


def _pct(x: float | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}")


def _p(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def effect(c: Comparison) -> str:
    d = c.diff
    return (f"{c.group.strategy} vs {c.reference.strategy} at data={c.data}: {_pct(d.mean, True)} points "
            f"[{_pct(d.ci_low, True)}, {_pct(d.ci_high, True)}], Holm p={_p(c.p_holm)}, n={c.n}"
            + (" (significant)" if c.significant else " (not significant)"))


def cell_folders(cell: dict[str, Any], root: Path) -> list[Path]:
    """The cell's sweep folders that have run: its own first, then its extra sweeps'."""
    names = [cell["id"], *(f"{cell['id']}_{e['name']}" for e in cell.get("extra", []))]
    return [root / n for n in names if (root / n / META).is_file()]


def cell_summary(cell: dict[str, Any], folders: list[Path], out: Path | None = None) -> Summary:
    """The cell's merged summary; with ``out``, its summary.md, CSVs and plots are written there too."""
    kw: dict[str, Any] = {"reference": cell.get("reference", DEFAULT_REFERENCE),
                          "contrasts": cell.get("contrasts", DEFAULT_CONTRASTS)}
    target = folders if len(folders) > 1 else folders[0]
    if out is None:
        return summarize(target, bootstrap=0, **kw)
    for name in PLOTS:  # the page lists the plots it finds: none may be left from an earlier run's settings
        (out / name).unlink(missing_ok=True)
    # each folder named as the page names it, wherever the study's folder is (the path as given goes first:
    # the resolved one may be a part of it)
    shown = {}
    for folder in folders:
        name = f"logs/study/{folder.resolve().parent.name}/{folder.name}"
        shown.update({str(folder): name, str(folder.resolve()): name})
    s = write_summary(target, out=out, shown=shown, **kw)
    reports = read_reports(folders[0])
    plot_layers_with_scores(s, reports, out / "layers_with_scores.png")
    return s


def answer(s: Summary, cell: dict[str, Any] | None = None) -> list[str]:
    """The cell's headline: the winner on validation per data size, every group's paired difference from
    the reference there (the winner may be the reference itself), then the cell's planned contrasts."""
    lines = []
    for size, w in s.winners.items():
        if w.group is None:
            lines.append(f"data={size}: no winner ({w.note})")
            continue
        lines.append(f"data={size}: chosen on validation, {w.group.strategy} (test {_pct(w.group.mean)}%, n={w.group.n})")
        lines += [floor_line(f, size) for f in s.floors(size) if f.near]
        lines += [effect(c) for c in s.comparisons if c.data == size and not c.contrast]
    lines += [effect(c) for c in s.comparisons if c.contrast]
    return lines


PLOTS = ("accuracy_by_strategy.png", "difference_from_reference.png", "accuracy_by_fraction.png",
         "transfer_gain.png", "layers_with_scores.png", "similarity.png")


def cell_markdown(cell: dict[str, Any], s: Summary, plots: Path | None = None, link: str = "") -> list[str]:
    out = [f"### {cell['title']} (`{cell['id']}`)", ""]
    if cell.get("note"):
        out += [cell["note"], ""]
    out += ["| group | data | n | test acc (%) | 95% CI | val acc (%) |", "|---|---|---:|---:|---|---:|"]
    for g in s.groups:
        ci = "" if g.ci95 is None else f"[{_pct(g.mean - g.ci95)}, {_pct(g.mean + g.ci95)}]"
        out.append(f"| {g.strategy} | {g.data} | {g.n} | {_pct(g.mean)} | {ci} | {_pct(g.val_mean)} |")
    if s.comparisons:
        out += ["", f"Paired differences (Holm over the cell's {s.m} comparisons):", "",
                "| comparison | data | n | difference (points) | 95% CI | Holm p | significant |",
                "|---|---|---:|---:|---|---:|---|"]
        for c in s.comparisons:
            d = c.diff
            out.append(f"| {c.group.strategy} vs {c.reference.strategy} | {c.data} | {c.n} | {_pct(d.mean, True)} | "
                       f"[{_pct(d.ci_low, True)}, {_pct(d.ci_high, True)}] | {_p(c.p_holm)} | "
                       f"{'yes' if c.significant else 'no'} |")
    out += [f"- {n}" for n in s.notes]
    if s.failed or s.incomplete:
        out += ["", f"Not finished: {len(s.failed)} failed, {len(s.incomplete)} incomplete jobs (rerun `make study`)."]
    if plots is not None:
        found = [name for name in PLOTS if (plots / name).is_file()]
        if found:
            out += ["", f"Full summary: [{link}/summary.md]({link}/summary.md).", ""]
            out += [f"![{cell['id']}: {name[:-4]}]({link}/{name})" for name in found]
    out.append("")
    return out


def _shown(text: str, preset: str) -> str:
    """A command as the page shows it: the study's folder as logs/study/<preset>, wherever it was when the
    sweep ran (XFER_HOME, another checkout) and however the page's caller names it now."""
    return re.sub(r"hydra\.sweep\.dir=\S*?([^/\s]+)(?=\s|$)", rf"hydra.sweep.dir=logs/study/{preset}/\1", text)


def results_markdown(preset: str, cells: list[dict[str, Any]], root: Path, out_dir: Path | None = None,
                     link: str = "") -> str:
    """The page, from ``root`` (the preset's folder of cell sweeps). With ``out_dir``, each cell's full
    summary is written into ``out_dir/<cell>/`` and the page links it as ``<link>/<cell>/``."""
    done: list[tuple[dict[str, Any], Summary, list[Path]]] = []
    missing = []
    for cell in cells:
        folders = cell_folders(cell, root)
        if not folders or folders[0] != root / cell["id"]:
            missing.append(cell["id"])
            continue
        done.append((cell, cell_summary(cell, folders, None if out_dir is None else out_dir / cell["id"]), folders))
    lines = [f"# Results: the `{preset}` study", "",
             f"Generated by `make study STUDY={preset}` (`python scripts/study.py study={preset}`) from the sweep "
             f"folders under `logs/study/{preset}/`, and regenerated from them alone by `python scripts/summarize.py "
             f"--study logs/study/{preset}`. Every number below is read from the runs' results.json: paired seeds, the "
             f"winner chosen on validation, differences with 95% t-CIs, p-values Holm-corrected within each cell. "
             f"A null result is a result.", ""]
    if missing:
        lines += [f"**Cells not yet run:** {', '.join(missing)}.", ""]
    lines += ["## Answers", ""]
    for key, question in QUESTIONS.items():
        evidence = [(cell, s) for cell, s, _ in done if key in cell.get("answers", [])]
        lines += [f"**{question}**", ""]
        if not evidence:
            lines += ["No cell of this preset has run for it yet.", ""]
            continue
        for cell, s in evidence:
            lines += [f"- table `{cell['id']}` ({cell['title']}):"] + [f"  - {a}" for a in answer(s, cell)]
        lines.append("")
    lines += ["## Tables", ""]
    for cell, s, _ in done:
        plots = None if out_dir is None else out_dir / cell["id"]
        lines += cell_markdown(cell, s, plots, f"{link}/{cell['id']}" if link else cell["id"])
    lines += ["## Rerun", "", "Each row is one sweep; `make study` reruns only what is not finished.", "",
              "| cell | sweep | jobs | command | commit | wall time |", "|---|---|---:|---|---|---:|"]
    total = 0.0
    for cell, _, folders in done:
        for folder in folders:
            meta = json.loads((folder / META).read_text())
            total += meta.get("wall_s", 0.0)
            lines.append(f"| `{cell['id']}` | `{folder.name}` | {meta.get('jobs', '?')} | "
                         f"`{_shown(meta['command'], preset)}` | {meta.get('commit', '?')} | "
                         f"{meta.get('wall_s', 0) / 60:.1f} min |")
    lines += ["", f"Wall time of the sweeps, all cells: {total / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def write_page(root: Path, out: Path) -> Path:
    """docs/results.md (``out``) and its cells' summaries (``<out folder>/results/<preset>/<cell>/``) from a
    study's folder ``root`` (``logs/study/<preset>``, whose study.json holds the preset)."""
    spec_file = root / META
    if not spec_file.is_file():
        raise FileNotFoundError(f"{spec_file}: not a study folder (run make study first)")
    spec = json.loads(spec_file.read_text())
    preset = spec["name"]
    out_dir = out.parent / "results" / preset
    md = results_markdown(preset, spec["cells"], root, out_dir, f"results/{preset}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, md.encode())
    return out
