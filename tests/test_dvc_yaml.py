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


def _plots(dvc: dict) -> list:
    """Every plots entry of dvc.yaml: the stages' (a foreach stage's ``do``) and the top-level ones."""
    entries = list(dvc.get("plots") or [])
    for entry in dvc["stages"].values():
        entries += (entry.get("do") or entry).get("plots") or []
    return entries


def test_every_plot_is_an_image_the_stage_draws():
    """`dvc plots show` renders a CSV plot with Vega from a CDN (blank offline); a PNG is copied into the
    page as it is. Every declared plot is a PNG with no Vega properties, and every training curve has one."""
    dvc = yaml.safe_load(render())
    entries = _plots(dvc)
    assert entries
    for e in entries:
        (path, props), = (e.items() if isinstance(e, dict) else [(e, {})])
        assert path.endswith(".png") and not {"x", "y", "template"} & set(props or {}), e
    paths = {next(iter(e)) if isinstance(e, dict) else e for e in entries}
    for curve in ("reports/image/train_curve", "reports/rdn/train_curve", "reports/region/train_curve",
                  "reports/hdm/finetune_curve", "reports/baselines/${key}/train_curve"):
        assert f"{curve}.png" in paths, curve
    assert {"reports/merged/per_class_iou.png", "reports/merged/k_curve.png"} <= paths


def test_a_table_cannot_be_declared_as_a_plot():
    from flows.declare import plot

    with pytest.raises(ValueError, match="PNG"):
        plot("reports/merged/k_curve.csv")


def test_the_curve_png_is_written_from_a_training_curve(tmp_path):
    import pandas as pd

    from nightlab.train import empty_curve
    from nightlab.viz import plot_curve

    curve = pd.DataFrame({"iter": [10, 20, 30], "epoch": [0, 0, 1], "loss": [0.9, 0.7, 0.6],
                          "val_loss": [1.0, 0.8, 0.75], "lr": [1e-3, 9e-4, 8e-4]})
    for name, data in (("curve.png", curve), ("empty.png", empty_curve())):
        plot_curve(data, tmp_path / name, "test")
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
