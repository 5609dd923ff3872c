"""The house: no import cycles in src/xfer (function-level imports count), a pipeline that knows no
strategy, and thin entry points."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "src" / "xfer"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the xfer modules it imports anywhere in its body (top level, functions, TYPE_CHECKING)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            hits: list[str] = []
            if isinstance(node, ast.Import):
                hits = [a.name for a in node.names if a.name in modules]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    # "from xfer.data import joint" imports the module xfer.data.joint; "from xfer.data import
                    # DataSpec" a name of the package xfer.data
                    sub = f"{base}.{a.name}"
                    hits.append(sub if sub in modules else base)
            graph[name].update(h for h in hits if h in modules and h != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None. A package's __init__ importing its own
    submodules is not a cycle unless a submodule imports the package back."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if colour.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in colour:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(graph):
        if m not in colour:
            found = visit(m)
            if found:
                return found
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_xfer():
    graph = import_graph()
    assert len(graph) > 30 and "xfer.target_stage" in graph["xfer.pipeline"]  # the walk found the modules
    assert "xfer.results" in graph["xfer.failure"]  # and imports inside functions
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_package_does_not_load_the_cli():
    graph = import_graph()
    assert graph["xfer"] == {"xfer.lazy_metrics", "xfer.resolvers"}  # lazy_metrics: before Lightning loads


def test_pipeline_names_no_strategy_and_asks_no_strategy_for_attributes():
    from xfer.argv import config_groups

    names = config_groups()["strategy"]
    for module in ("pipeline.py", "source_stage.py", "target_stage.py", "stage.py", "results.py"):
        text = (PACKAGE / module).read_text()
        tree = ast.parse(text)
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not {s for s in strings if s in names}, (module, strings & set(names))
        getattrs = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "getattr"]
        assert not getattrs or module in ("target_stage.py",), module
        if module == "target_stage.py":  # its one getattr reads Lightning's checkpoint callback
            assert all(ast.unparse(g.args[0]) == "ckpt" for g in getattrs)


def test_train_py_is_thin_and_importing_it_starts_nothing(tmp_path: Path):
    lines = [line for line in (ROOT / "train.py").read_text().splitlines() if line.strip()]
    assert len(lines) < 15
    proc = subprocess.run([sys.executable, "-c", "import train, sys; print(sorted(m for m in sys.modules if m in "
                           "('torch', 'pytorch_lightning', 'xfer.pipeline')))", "strategy=nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]" and proc.stderr == ""
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("entry, heavy", [("analyze", "xfer.analysis.transfer")])
def test_analyze_py_is_thin_and_importing_it_starts_nothing(entry: str, heavy: str):
    lines = [line for line in (ROOT / f"{entry}.py").read_text().splitlines() if line.strip()]
    assert len(lines) < 15
    proc = subprocess.run([sys.executable, "-c", f"import {entry}, sys; print(sorted(m for m in sys.modules if m in "
                           f"('torch', 'pytorch_lightning', '{heavy}')))"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_only_a_runs_end_a_sweeps_end_and_the_cka_summary_use_the_diagnostics():
    """The diagnostics read runs, checkpoints and the cache; no stage or model depends on them. A run's end
    measures its CKA (xfer.pipeline -> analysis.similarity), the sweep's end scores the source trunks (the
    Hydra callback), and the summary compares seeds by CKA with analysis.scores alone, which imports no torch."""
    graph = import_graph()
    assert "xfer.analysis.scores" in graph["xfer.analysis.transfer"]
    users = {(m, d) for m, deps in graph.items() if not m.startswith("xfer.analysis")
             for d in deps if d.startswith("xfer.analysis")}
    assert {m for m, _ in users} == {"xfer.hydra_callbacks", "xfer.pipeline", "xfer.report.similarity"}, users
    assert {d for m, d in users if m.startswith("xfer.report")} == {"xfer.analysis.scores"}
    assert {d for m, d in users if m == "xfer.pipeline"} == {"xfer.analysis.similarity"}
    assert not {d for d in graph["xfer.analysis.scores"] if d.startswith("xfer.")}
