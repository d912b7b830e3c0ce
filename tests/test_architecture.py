"""The layering of the packages: what may import what (issue 22).

- ``serving.api``, ``serving.candidates`` and ``serving.features`` (the online path) import without torch, scikit-learn
  or faiss installed: a fresh interpreter whose import system refuses those libraries imports them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "sklearn", "faiss")


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
        import serving.api, serving.candidates, serving.features
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
