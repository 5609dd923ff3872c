"""scripts/bench_compare.py: two bench runs side by side, each figure read from where bench.py writes it."""
from __future__ import annotations

import copy
import json

import pytest

from conftest import ROOT, run_script_in_process

BENCH = ROOT / "docs" / "bench" / "bench.json"  # the latest full `make bench`, committed


@pytest.fixture(scope="module")
def compare_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("scripts_bench_compare", ROOT / "scripts" / "bench_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(table: str) -> dict[str, list[str]]:
    """measure -> its cells; rows whose measure repeats ("same, ...") keep the first one's key plus a count."""
    out: dict[str, list[str]] = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| measure"):
            label, *cells = [c.strip() for c in line.strip("|").split("|")]
            key, n = label, 1
            while key in out:
                n += 1
                key = f"{label} #{n}"
            out[key] = cells
    return out


def test_every_row_reads_a_figure_the_committed_full_bench_has(compare_module):
    run = json.loads(BENCH.read_text())
    missing = [label for label, getter, _, _ in compare_module.ROWS if compare_module.value(run, getter) is None]
    assert missing == []  # a wrong key path would show as "-" in every table, silently
    table = rows(compare_module.compare(run, run))
    assert len(table) == len(compare_module.ROWS)
    assert all(cells[0] == cells[1] and cells[2] == "1.00" for cells in table.values())


def test_a_figure_one_run_lacks_shows_as_a_dash_and_the_ratio_is_after_over_before(compare_module):
    before = json.loads(BENCH.read_text())
    after = copy.deepcopy(before)
    del before["backbones"]  # an older bench, without that section
    after["e2e"]["warm_s"] = before["e2e"]["warm_s"] / 2
    after["startup"]["first_step_over_torch"] = 1.5
    text = compare_module.compare(before, after, ("old", "new"))
    table = rows(text)
    assert "| measure | old | new | new / old | goal |" in text
    assert "different machines" not in text
    contiguous = table["resnet18 32x32, bare step, contiguous (samples/s)"]
    assert contiguous[0] == "-" and contiguous[1] != "-" and contiguous[2] == "-"
    assert table["same, warm: cached trunk (s)"][2] == "0.50"
    assert table["first step / `import torch`"][1:] == ["1.50x", f"{1.5 / before['startup']['first_step_over_torch']:.2f}",
                                                        "<= 2.00x"]


def test_runs_from_different_machines_are_flagged(compare_module):
    before = json.loads(BENCH.read_text())
    after = copy.deepcopy(before)
    after["machine"]["cpu"] = "some other CPU"
    assert "**The two runs are from different machines: their figures do not compare.**" in compare_module.compare(before, after)


def test_writes_the_table_where_out_says(tmp_path):
    out = tmp_path / "compare.md"
    proc = run_script_in_process("bench_compare", [BENCH, BENCH, "--out", out, "--names", "a,b"])
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == proc.stdout
    assert "| measure | a | b | b / a | goal |" in proc.stdout


@pytest.mark.parametrize("case", ["missing", "not_json", "not_bench", "names"])
def test_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, case):
    out = tmp_path / "compare.md"
    bad = tmp_path / "bad.json"
    argv = [BENCH, bad, "--out", out]
    if case == "not_json":
        bad.write_text("{ half")
    elif case == "not_bench":
        bad.write_text("[1, 2]")
    elif case == "names":
        argv = [BENCH, BENCH, "--names", "only-one", "--out", out]
    proc = run_script_in_process("bench_compare", argv)
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    expected = {"missing": f"error: {bad}: no such file; allowed: a bench.json written by scripts/bench.py",
                "not_bench": f"error: {bad}: JSON, but not a bench.json (no 'machine'); allowed: a bench.json "
                             "written by scripts/bench.py",
                "names": "error: --names 'only-one'; allowed: two names, comma-separated"}
    if case == "not_json":
        assert line.startswith(f"error: {bad}: not JSON (") and line.endswith("allowed: a bench.json written by scripts/bench.py")
    else:
        assert line == expected[case]
    assert not out.exists()
