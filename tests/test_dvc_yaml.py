"""dvc.yaml cannot drift from the code: each stage's deps are exactly the project modules its
flow imports (its import closure) plus the artifacts it declares in READS, its outs are its
WRITES, and its params are keys that exist. The params a stage *reads* are enforced at run time
(flows.common.stage_flow reads through a ParamsView of the declared keys) and compared with the
declared ones in the end-to-end run (tests/test_e2e.py).

Run ``python tests/test_dvc_yaml.py`` to print the code deps each stage should list.
"""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nightlab", "flows")


def _module_file(name: str) -> Path | None:
    p = ROOT / Path(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imports(path: Path, module: str) -> set[str]:
    """Every project module named by an import anywhere in the file (function-level imports too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES}


def import_closure(module: str) -> set[str]:
    """Project files (relative paths) that importing ``module`` can execute."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            name = ".".join(parts[:i])
            f = _module_file(name)
            if f is not None and name not in seen:
                seen[name] = f
                todo.extend(_imports(f, name))
    return {f.relative_to(ROOT).as_posix() for f in seen.values()}


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _paths(entries) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def _code_files(dep: str) -> set[str]:
    """A code dep as files: a directory stands for every .py file under it."""
    p = ROOT / dep
    if p.is_dir():
        return {f.relative_to(ROOT).as_posix() for f in p.rglob("*.py") if "__pycache__" not in f.parts}
    return {dep}


def _is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


STAGES = sorted(_stages())


def _flow_module(stage: str):
    return importlib.import_module(f"flows.{stage}")


@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_are_the_import_closure(stage):
    entry = _stages()[stage].get("do", _stages()[stage])
    listed = set().union(*(_code_files(d) for d in _paths(entry["deps"]) if _is_code(d)))
    needed = import_closure(f"flows.{stage}")
    missing, extra = sorted(needed - listed), sorted(listed - needed)
    assert not missing and not extra, (f"dvc.yaml stage {stage}: add {missing} / remove {extra} "
                                       "(python tests/test_dvc_yaml.py prints the full list)")


@pytest.mark.parametrize("stage", STAGES)
def test_data_deps_and_outs_are_what_the_flow_declares(stage):
    entry = _stages()[stage].get("do", _stages()[stage])
    flow = _flow_module(stage)
    data_deps = {d for d in _paths(entry["deps"]) if not _is_code(d) and "${" not in d}
    assert data_deps == {Path(p).as_posix() for p in flow.READS}, f"{stage}: deps vs flows/{stage}.py READS"
    outs = set()
    for key in ("outs", "metrics", "plots"):
        outs |= set(_paths(entry.get(key)))
    written = {Path(p).as_posix() for p in flow.WRITES}
    # A directory in WRITES covers the files the stage writes under it.
    uncovered = {o for o in outs if not any(o == w or o.startswith(w + "/") for w in written)}
    assert not uncovered, f"{stage}: outs {sorted(uncovered)} are not in flows/{stage}.py WRITES"
    unlisted = {w for w in written if not any(o == w or o.startswith(w + "/") for o in outs)}
    assert not unlisted, f"{stage}: WRITES {sorted(unlisted)} are not outs in dvc.yaml"


@pytest.mark.parametrize("stage", STAGES)
def test_declared_params_exist(stage):
    from nightlab.config import Params

    entry = _stages()[stage].get("do", _stages()[stage])
    for key in entry.get("params", []):
        node = Params()
        for part in key.split("."):
            if part.startswith("${"):  # a foreach stage's own entry (data.sources.${key}): any name
                assert isinstance(node, dict), f"{stage}: {key!r} templates a key of a non-mapping"
                break
            assert hasattr(node, part), f"{stage}: params key {key!r} does not exist in nightlab.config.Params"
            node = getattr(node, part)


def test_image_model_keys_split_between_training_and_inference():
    """train_image_model declares every image_model key but the inference-only ones (the sliding window
    never retrains), and every stage that runs the image model (reads models/image, other than for its
    weights alone) declares those."""
    from flows.paths import IMAGE_MODEL
    from flows.train_image_model import INFERENCE_ONLY
    from nightlab.config import ImageModelConfig

    stages = _stages()
    keys = {f"image_model.{k}" for k in ImageModelConfig.model_fields}
    inference = {f"image_model.{k}" for k in INFERENCE_ONLY}
    declared = {k for k in stages["train_image_model"]["params"] if k.startswith("image_model")}
    assert declared == keys - inference
    runners = [s for s in STAGES if IMAGE_MODEL in _flow_module(s).READS
               and not getattr(_flow_module(s), "IMAGE_MODEL_WEIGHTS_ONLY", False)]
    assert runners and all(inference <= set(stages[s].get("params", [])) for s in runners), runners


def test_closure_sees_function_level_and_relative_imports(tmp_path):
    assert "nightlab/io.py" in import_closure("nightlab.data.manifest")
    assert "flows/common.py" in import_closure("flows.train_rdn")
    assert "nightlab/__init__.py" in import_closure("nightlab.io")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for stage in STAGES:
        print(f"{stage}:")
        for f in sorted(import_closure(f"flows.{stage}")):
            print(f"      - {f}")
