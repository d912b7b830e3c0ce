"""The layering of the packages: what may import what (issue 22, the layers of topicfs_app/__init__.py).

- Every import statement of the packages (module level or inside a function, read with ``ast``) is mapped to the
  top-level package it names: ``topicfs`` (the base) imports no other package of the project, nothing imports
  ``topicfs_app`` (the composition root), the package graph has no cycle, ``serving`` (the online path) imports no
  offline job or stream, and ``stream`` reaches the offline jobs only through ``offline_jobs.inference``.
- ``serving.api``, ``serving.candidates`` and ``serving.features`` (the online path) and ``offline_jobs.inference``
  import without torch, scikit-learn or faiss installed: a fresh interpreter whose import system refuses those
  libraries imports them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("topicfs", "offline_jobs", "serving", "stream", "topicfs_app")
STAGES = ("offline_jobs", "serving", "stream")
HEAVY = ("torch", "sklearn", "faiss")


def imported_modules(path: Path) -> list[str]:
    """Absolute names of the modules every import statement of ``path`` names (``from a import b``: a and a.b)."""
    names = []
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


def import_arrows() -> dict[tuple[str, str], set[str]]:
    """(importing package, imported package) -> the modules (file: imported module) that make the arrow."""
    arrows = defaultdict(set)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imported_modules(path):
                target = name.split(".")[0]
                if target in PACKAGES and target != package:
                    arrows[package, target].add(f"{path.relative_to(ROOT)}: {name}")
    return arrows


def test_the_reader_sees_imports_inside_functions():
    source = ROOT / "topicfs_app" / "cli.py"
    names = imported_modules(source)
    assert "stream.cli" in names and "topicfs_app.demo" in names  # both imported inside functions
    assert {("topicfs_app", "stream"), ("topicfs_app", "serving"), ("topicfs_app", "offline_jobs")} <= set(import_arrows())


def test_the_base_imports_no_stage_and_nothing_imports_the_composition_root():
    arrows = import_arrows()
    upward = {arrow: sorted(where) for arrow, where in arrows.items() if arrow[0] == "topicfs" or arrow[1] == "topicfs_app"}
    assert upward == {}, upward


def test_the_package_graph_has_no_cycle():
    graph = defaultdict(set)
    for source, target in import_arrows():
        graph[source].add(target)
    done, visiting = set(), []

    def visit(node):
        assert node not in visiting, f"import cycle: {' -> '.join([*visiting[visiting.index(node) :], node])}"
        if node in done:
            return
        visiting.append(node)
        for target in sorted(graph[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for package in PACKAGES:
        visit(package)


def test_serving_is_online_only_and_the_stream_imports_only_the_inference_module():
    arrows = import_arrows()
    assert not arrows.get(("serving", "offline_jobs")) and not arrows.get(("serving", "stream")), arrows
    from_stream = {where.split(": ")[1] for where in arrows.get(("stream", "offline_jobs"), set())}
    assert from_stream <= {"offline_jobs.inference", "offline_jobs.inference.load_topic_assigner"}, from_stream


def test_the_online_path_imports_without_torch_sklearn_or_faiss():
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (refused by the test)")
                return None

        sys.meta_path.insert(0, Refuse())
        import serving.api, serving.candidates, serving.features, offline_jobs.inference
        try:
            import serving.rankers
        except ModuleNotFoundError as exc:
            print("refused:", exc)
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        print("heavy loaded:", loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "refused: No module named 'torch'" in done.stdout  # the hook works: the rankers do need torch
    assert "heavy loaded: []" in done.stdout
