"""The package layering: each package imports only the packages below it, and nothing imports upward.

    core < annotations < lmdb_builders < detector < prepare < trainers < recognition < evaluation < demo, benchmarks

Every ``.py`` file of every top-level package is parsed (``ast``, nothing is imported) and every
import of a project package is collected, those inside functions included (and
``importlib.import_module("...")`` of a literal name). The project's packages
are its top-level folders holding ``.py`` files, so a new package must be placed in ``LAYERS``
before this test passes. The checker runs on synthetic trees too, to show that it catches a cycle,
an import out of ``core`` and an upward import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from child_env import REPO

# Bottom first; packages on one rank (a tuple) may not import each other.
LAYERS = ("core", "annotations", "lmdb_builders", "detector", "prepare", "trainers", "recognition", "evaluation",
          ("demo", "benchmarks"))
NOT_PACKAGES = {"tests", "build", "weights"}


def ranks(layers=LAYERS) -> dict[str, int]:
    return {name: i for i, layer in enumerate(layers) for name in ((layer,) if isinstance(layer, str) else layer)}


def project_packages(root: Path) -> list[str]:
    """Top-level folders holding .py files (hidden folders, virtual environments and tests excepted)."""
    return sorted(
        d.name for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name not in NOT_PACKAGES
        and not (d / "pyvenv.cfg").exists() and any(d.rglob("*.py"))
    )


def imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import statement anywhere in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    return found


def package_imports(root: Path, packages) -> dict[tuple[str, str], list[str]]:
    """``{(importer, imported): ["file:line", ...]}`` between different packages of ``packages``."""
    edges: dict[tuple[str, str], list[str]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for module, line in imported_modules(tree):
                target = module.split(".")[0]
                if target in packages and target != package:
                    edges.setdefault((package, target), []).append(f"{path.relative_to(root)}:{line}")
    return edges


def find_cycle(edges) -> list[str] | None:
    """One cycle of the package graph as ``[a, b, ..., a]``, or None."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def layering_problems(root: Path, layers=LAYERS) -> list[str]:
    """Every breach of the layering under ``root``, one readable line each (empty: none)."""
    rank = ranks(layers)
    packages = project_packages(root)
    problems = [f"package {p!r} is not in the declared layers {layers}" for p in packages if p not in rank]
    edges = package_imports(root, packages)
    cycle = find_cycle(edges)
    if cycle:
        steps = [f"{a} -> {b} ({edges[(a, b)][0]})" for a, b in zip(cycle, cycle[1:])]
        problems.append("import cycle " + " -> ".join(cycle) + ": " + "; ".join(steps))
    for (a, b), where in sorted(edges.items()):
        if a == "core":
            problems.append(f"core imports the project package {b} at {', '.join(where)}")
        elif a in rank and b in rank and rank[b] >= rank[a]:
            problems.append(f"{a} imports {b}, which is not below it, at {', '.join(where)}")
    return problems


# -- the project -----------------------------------------------------------------------------------


def test_the_project_keeps_its_layers():
    packages = project_packages(REPO)
    assert {"core", "detector", "evaluation"} <= set(packages)  # the scan sees the project
    assert package_imports(REPO, packages), "no import between packages found: the scan is broken"
    assert layering_problems(REPO) == []


# -- the checker catches what it must --------------------------------------------------------------


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "core/__init__.py": "",
    "core/geometry.py": "import numpy as np\n",
    "detector/__init__.py": "from detector.cascade import X\n",
    "detector/cascade.py": "from core.geometry import nms\nfrom . import other\n",
    "evaluation/roc.py": "import core.geometry\nfrom detector import X\n",
    "tests/test_x.py": "import evaluation.roc\n",  # tests may import anything
    ".venv/lib/site.py": "import evaluation\n",
}


def test_a_clean_tree_passes(tmp_path):
    root = make_tree(tmp_path, CLEAN)
    assert project_packages(root) == ["core", "detector", "evaluation"]
    assert set(package_imports(root, project_packages(root))) == {
        ("detector", "core"), ("evaluation", "core"), ("evaluation", "detector")}
    assert layering_problems(root) == []


def test_a_cycle_is_shown(tmp_path):
    root = make_tree(tmp_path, {**CLEAN, "detector/late.py": "def f():\n    from evaluation.roc import g\n"})
    problems = layering_problems(root)
    cycle = [p for p in problems if p.startswith("import cycle")]
    assert len(cycle) == 1 and "detector -> evaluation -> detector" in cycle[0]
    assert "detector/late.py:2" in cycle[0]  # an import inside a function counts
    assert any(p.startswith("detector imports evaluation, which is not below it") for p in problems)


def test_core_may_import_no_project_package(tmp_path):
    root = make_tree(tmp_path, {**CLEAN, "core/nets.py": "import detector.cascade as c\n"})
    problems = layering_problems(root)
    assert any(p.startswith("core imports the project package detector at core/nets.py:1") for p in problems)


def test_an_upward_import_without_a_cycle_is_refused(tmp_path):
    files = {**CLEAN, "annotations/wider.py": "import numpy\n",
             "core/geometry.py": "import numpy as np\n",
             "annotations/stats.py": "try:\n    import trainers.train\nexcept ImportError:\n    pass\n",
             "trainers/train.py": "from core.geometry import nms\n"}
    problems = layering_problems(make_tree(tmp_path, files))
    assert problems == ["annotations imports trainers, which is not below it, at annotations/stats.py:2"]


def test_packages_on_one_rank_may_not_import_each_other_and_unknown_packages_are_named(tmp_path):
    files = {**CLEAN, "demo/run.py": "import benchmarks.bench\n", "benchmarks/bench.py": "import detector\n",
             "extra/tool.py": "import core\n"}
    problems = layering_problems(make_tree(tmp_path, files))
    assert "demo imports benchmarks, which is not below it, at demo/run.py:1" in problems
    assert any(p.startswith("package 'extra' is not in the declared layers") for p in problems)


@pytest.mark.parametrize("source", ["import evaluation.roc\n", "from evaluation import roc\n",
                                    "import os, evaluation\n", "def f():\n    class A:\n        import evaluation\n",
                                    "import importlib\nm = importlib.import_module('evaluation.roc')\n"])
def test_every_form_of_import_is_seen(tmp_path, source):
    root = make_tree(tmp_path, {**CLEAN, "detector/x.py": source})
    assert ("detector", "evaluation") in package_imports(root, project_packages(root))
