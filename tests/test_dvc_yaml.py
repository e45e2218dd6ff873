"""dvc.yaml cannot drift from the code: it is generated from each flow's declarations (READS,
WRITES, PARAMS) and import closure by ``nightlab dvc-yaml`` (flows/dvc_yaml.py), and the committed
file must be exactly the generated one. Here: that it is, that the closure really finds every
import (function-level and relative ones too), that every declared key exists and that every
stage of the DAG has a flow. The params a stage *reads* are enforced at run time
(flows.common.stage_flow reads through a ParamsView of the declared keys) and compared with the
declared ones in the end-to-end run (tests/test_e2e.py).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from flows.dvc_yaml import ROOT, STAGES, import_closure, render
from nightlab_cli.main import main


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_committed_dvc_yaml_is_the_generated_one():
    assert (ROOT / "dvc.yaml").read_text() == render(), "dvc.yaml is stale: run `nightlab dvc-yaml`"


def test_the_check_command_fails_on_a_hand_edited_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "dvc.yaml").write_text(render().replace("- data\n", "- data.seed\n", 1))
    monkeypatch.chdir(tmp_path)
    assert main(["dvc-yaml", "--check"]) == 1
    assert "nightlab dvc-yaml" in capsys.readouterr().err
    assert main(["dvc-yaml"]) == 0 and main(["dvc-yaml", "--check"]) == 0
    assert (tmp_path / "dvc.yaml").read_text() == render()


def test_every_flow_module_is_a_stage():
    flows = {p.stem for p in (ROOT / "flows").glob("*.py")
             if hasattr(importlib.import_module(f"flows.{p.stem}"), "WRITES")}
    assert flows == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_are_every_project_file_the_flow_can_run(stage):
    entry = _stages()[stage].get("do", _stages()[stage])
    listed = {d for d in entry["deps"] if d.split("/")[0] in ("nightlab", "flows")}
    assert listed == import_closure(f"flows.{stage}")
    assert all((ROOT / d).is_file() for d in listed)


@pytest.mark.parametrize("stage", STAGES)
def test_declared_params_exist(stage):
    from nightlab.config import Params

    for key in importlib.import_module(f"flows.{stage}").PARAMS:
        node = Params()
        for part in key.split("."):
            if part.startswith("${"):  # a foreach stage's own entry (data.sources.${key}): any name
                assert isinstance(node, dict), f"{stage}: {key!r} templates a key of a non-mapping"
                break
            assert hasattr(node, part), f"{stage}: params key {key!r} does not exist in nightlab.config.Params"
            node = getattr(node, part)


def test_outputs_under_reports_are_committed_not_cached():
    for stage in STAGES:
        entry = _stages()[stage].get("do", _stages()[stage])
        for kind in ("outs", "metrics", "plots"):
            for out in entry.get(kind, []):
                (path, props), = out.items()
                assert props["persist"] is True, (stage, path)
                if not path.startswith("reports/"):
                    assert props.get("cache", True), (stage, path)
    # the one exception: the per-class IoU table that select_hard_classes reads is DVC's, not git's
    assert _stages()["per_class_iou"]["outs"][0]["reports/image/per_class_iou.parquet"] == {"persist": True}


def test_image_model_keys_split_between_training_and_inference():
    """train_image_model declares every image_model key but the inference-only ones (the sliding window
    never retrains), and every stage that runs the image model (reads models/image, other than for its
    weights alone) declares those."""
    from flows.paths import IMAGE_MODEL
    from flows.train_image_model import INFERENCE_ONLY, PARAMS
    from nightlab.config import ImageModelConfig

    keys = {f"image_model.{k}" for k in ImageModelConfig.model_fields}
    inference = {f"image_model.{k}" for k in INFERENCE_ONLY}
    assert {k for k in PARAMS if k.startswith("image_model")} == keys - inference
    flows = [importlib.import_module(f"flows.{s}") for s in STAGES]
    runners = [f for f in flows if IMAGE_MODEL in f.READS and not getattr(f, "IMAGE_MODEL_WEIGHTS_ONLY", False)]
    assert runners and all(inference <= set(f.PARAMS) for f in runners), runners


def test_closure_sees_function_level_and_relative_imports():
    assert "nightlab/io.py" in import_closure("nightlab.data.manifest")
    assert "flows/common.py" in import_closure("flows.train_rdn")
    assert "nightlab/__init__.py" in import_closure("nightlab.io")
    # nightlab.export is imported inside a function of the CLI only: not in any stage's closure
    assert not any("nightlab/export.py" in import_closure(f"flows.{s}") for s in STAGES)
    assert "nightlab/config/writer.py" not in import_closure("flows.prepare_data")


def test_the_models_layout_is_the_one_trained_models_reads():
    from flows.paths import HDM_MODEL, IMAGE_MODEL, MODELS, RDN_MODEL, REGION_MODEL
    from nightlab.trained import IMAGE, REGION

    assert (IMAGE_MODEL, REGION_MODEL) == (MODELS / IMAGE, MODELS / REGION)
    assert (RDN_MODEL.name, HDM_MODEL.name, RDN_MODEL.parent, HDM_MODEL.parent) == ("rdn", "hdm", MODELS, MODELS)
    assert Path("models") == MODELS
