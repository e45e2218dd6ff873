"""The three layers: nightlab (library) <- flows (Prefect stages) <- nightlab_cli (command line).

The library imports neither DVC, nor Prefect, nor the layers above it: checked statically over
every module's imports (function-level ones too) and by importing every module in a fresh
interpreter. Importing a package changes no global state (environment, matplotlib backend).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Imported first: their own import-time effects (cv2 extends LD_LIBRARY_PATH) are not ours.
THIRD_PARTY = "import cv2, matplotlib, pandas, timm, torch, torchvision"
FORBIDDEN = {"nightlab": ("dvc", "prefect", "prefect_dask", "flows", "nightlab_cli"),
             "flows": ("nightlab_cli",)}


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(package):
    bad = {f"{p.relative_to(ROOT)} imports {m}" for p in _modules(package) for m in _imported(p)
           if m in FORBIDDEN[package]}
    assert not bad, sorted(bad)


def test_importing_the_whole_library_loads_neither_dvc_nor_prefect():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in _modules("nightlab")]
    code = (f"import importlib, os, sys; {THIRD_PARTY}; env = dict(os.environ)\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "loaded = sorted({n.split('.')[0] for n in sys.modules} & {'dvc', 'prefect', 'flows', 'nightlab_cli'})\n"
            "assert not loaded, loaded\n"
            "assert dict(os.environ) == env, 'importing the library changed the environment'\n"
            "import matplotlib; assert 'matplotlib.pyplot' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def test_importing_flows_changes_no_environment():
    code = (f"import os; {THIRD_PARTY}; env = dict(os.environ); import flows, flows.common, flows.pipeline\n"
            "changed = [k for k in set(os.environ) | set(env) if os.environ.get(k) != env.get(k)]\n"
            "assert not changed, changed\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
