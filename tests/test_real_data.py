"""The whole DAG on real dataset layouts: two sources (Cityscapes and NightCity layouts written
from synthetic scenes, so it always runs; plus the real Cityscapes sample when it is present),
and DVC noticing a changed file under a source's root."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import pandas as pd
import pytest
import yaml
from conftest import ROOT, ran_stages, run
from scaffold import commit, synthetic_in_layout

pytestmark = pytest.mark.e2e
SAMPLE = ROOT.parent / "shared" / "fixtures" / "cityscapes_sample"


def _two_sources(tmp_path: Path, with_sample: bool) -> dict:
    cs = synthetic_in_layout("cityscapes", tmp_path / "raw" / "cityscapes", "train", 4, domain="day")
    nc = tmp_path / "raw" / "nightcity"
    synthetic_in_layout("nightcity", nc, "train", 4, domain="night")
    synthetic_in_layout("nightcity", nc, "val", 3, domain="night", first=100)
    sources = {"cityscapes": {"kind": "cityscapes", "root": str(cs), "splits": ["train"]},
               "nightcity": {"kind": "nightcity", "root": str(nc), "splits": ["train", "val"]}}
    if with_sample:  # the real frame: read in place, never copied
        sources["cs_sample"] = {"kind": "cityscapes", "root": str(SAMPLE), "splits": ["val"]}
    return sources


def test_two_source_dag_on_real_layouts_and_raw_data_tracked(tmp_path, stage_env):
    from scaffold import copy_project

    with_sample = SAMPLE.is_dir()
    sources = _two_sources(tmp_path, with_sample)
    proj = copy_project(tmp_path / "proj", changes={
        "data.synthetic": None, "data.sources": sources,
        "splits.train": ["cityscapes/train/*", "nightcity/train/*"],
        "splits.select": ["nightcity/val/night"], "splits.report": ["nightcity/val/night"],
        "splits.report_on_select": True})
    out = run(["dvc", "repro"], proj, stage_env).stdout
    stages = set(ran_stages(out))
    expected = {"check_source@cityscapes", "check_source@nightcity", "prepare_data", "hard_region_boxes",
                "train_image_model", "per_class_iou", "select_hard_classes", "train_rdn", "train_region_model",
                "hdm_relabel_retrain", "evaluate_merged", "train_baseline@longer", "train_baseline@fullres"} | (
                    {"check_source@cs_sample"} if with_sample else set())  # the baselines are in the default DAG
    assert stages == expected, out[-3000:]
    manifest = pd.read_parquet(proj / "data/manifest.parquet")
    assert set(manifest.source) == {"cityscapes", "nightcity"} | ({"cs_sample"} if with_sample else set())
    assert manifest.md5.str.len().eq(32).all()
    assert set(manifest[manifest.source == "nightcity"].split) == {"train", "val"}
    report = (proj / "reports/README.md").read_text()
    assert "nightcity/val/night" in report and "not held out" in report
    commit(proj, "two-source run")

    # A new image and a changed label under the NightCity root: DVC sees exactly that source as stale.
    nc = Path(sources["nightcity"]["root"])
    synthetic_in_layout("nightcity", nc, "train", 1, domain="night", first=50)
    label = nc / "label" / "val" / "scene_00100_labelIds.png"
    lab = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    lab[: lab.shape[0] // 2] = 0  # a labeller "zeroes" half a label (labelId 0: unlabeled)
    cv2.imwrite(str(label), lab)
    status = run(["dvc", "status", "--json"], proj, stage_env).stdout
    stale = json.loads(status)
    assert "check_source@nightcity" in stale and "check_source@cityscapes" not in stale, status
    again = run(["dvc", "repro", "prepare_data"], proj, stage_env).stdout
    assert set(ran_stages(again)) == {"check_source@nightcity", "prepare_data"}, again[-2000:]
    after = pd.read_parquet(proj / "data/manifest.parquet")
    assert len(after) == len(manifest) + 1
    if not with_sample:
        pytest.skip(f"the real Cityscapes sample is not here ({SAMPLE}); ran the synthetic layouts only")


def test_params_of_a_source_are_its_own(tmp_path):
    """A change in one source's settings touches only that source's stage (params data.sources.<name>)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "data.sources.${key}" in stages["check_source"]["do"]["params"]
    assert "${item.root}" in stages["check_source"]["do"]["deps"]
