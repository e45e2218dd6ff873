"""End to end: the real `dvc repro` on the tiny profile in a temporary copy of the project.

The tests share one project copy and run in file order: full run, no-op rerun, prediction and
export with the trained models, then a threshold change and `dvc metrics diff`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, copy_project

pytestmark = pytest.mark.e2e
STREET = ROOT.parent / "shared" / "fixtures" / "street_day_1024x512.png"


def run(cmd, cwd, env, check=True):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_server):
    env = {**os.environ, "PREFECT_API_URL": prefect_server["url"], "PREFECT_HOME": prefect_server["home"],
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    proj = copy_project(tmp_path_factory.mktemp("e2e") / "proj")
    first = run(["dvc", "repro"], proj, env)
    return proj, env, first.stdout


def test_full_repro_runs_every_stage_and_writes_reports(project):
    proj, env, out = project
    stages = list(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"])
    assert sorted(ran_stages(out)) == sorted(stages)
    manifest = pd.read_parquet(proj / "data/manifest.parquet")
    assert set(manifest.domain) == {"day", "night"} and set(manifest.split) == {"train", "val"}
    hard = json.loads((proj / "reports/hard_classes.json").read_text())
    assert hard["threshold"] == 0.5 and all(c["iou"] < 0.5 for c in hard["classes"])
    metrics = json.loads((proj / "reports/metrics.json").read_text())
    for variant in ("image", "merged_rdn", "merged_hdm", "merged_gt"):
        assert 0.0 <= metrics[f"{variant}.mIoU"] <= 1.0
    # The stage's image-level numbers agree with the per_class_iou stage on the same split.
    image = json.loads((proj / "reports/image/metrics.json").read_text())
    assert metrics["image.mIoU"] == pytest.approx(image["image.mIoU"], abs=1e-6)
    proposals = pd.read_parquet(proj / "data/hdm_proposals.parquet")
    assert {"iou_region", "iou_image", "orig_positive", "v", "new_label"} <= set(proposals.columns)
    assert ((proposals.new_label == 1) <= (proposals.orig_positive & (proposals.v == 1))).all()
    for fig in ("reports/data/samples.png", "reports/merged/panel.png", "reports/merged/per_class_iou.png"):
        assert cv2.imread(str(proj / fig)) is not None, fig
    assert "| Method |" in (proj / "reports/README.md").read_text()
    run(["git", "add", "-A"], proj, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], proj, env)


def test_noop_rerun_executes_nothing(project):
    proj, env, _ = project
    again = run(["dvc", "repro"], proj, env)
    assert ran_stages(again.stdout) == [], again.stdout


def test_predict_on_real_photo_and_unreadable_file(project, tmp_path):
    proj, env, _ = project
    images = []
    if STREET.is_file():
        images.append(STREET)  # a real street photo, read in place (never copied into the project)
    odd = tmp_path / "odd size.jpg"  # a jpg of a size the models never saw
    cv2.imwrite(str(odd), np.random.default_rng(0).integers(0, 255, (97, 203, 3), dtype=np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    images += [odd, broken]
    res = run([str(BIN / "nightlab"), "predict", *map(str, images), "--out", str(tmp_path / "pred")], proj, env, check=False)
    assert res.returncode == 1, res.stdout + res.stderr  # some failed
    assert "broken.png" in res.stderr
    for img in images[:-1]:
        stem = Path(img).stem
        lab = cv2.imread(str(tmp_path / "pred" / f"{stem}_trainIds.png"), cv2.IMREAD_UNCHANGED)
        src = cv2.imread(str(img))
        assert lab.shape == src.shape[:2] and lab.max() < 19
        assert (tmp_path / "pred" / f"{stem}_overlay.png").is_file()
        assert (tmp_path / "pred" / f"{stem}_color.png").is_file()


def test_export_matches_eager(project, tmp_path):
    proj, env, _ = project
    res = run([str(BIN / "nightlab"), "export", "--out", str(tmp_path / "export")], proj, env)
    assert "image_model" in res.stdout and "region_model" in res.stdout
    assert (tmp_path / "export" / "image_model.torchscript.pt").is_file()


def test_hdm_relabel_shards_on_dask_match_threads(project, tmp_path):
    """The HDM relabel shards on a local Dask cluster (2 worker processes) score every proposal
    exactly as the thread runner did in the full run."""
    proj, env, _ = project
    copy = tmp_path / "dask"
    shutil.copytree(proj, copy, symlinks=True, ignore=shutil.ignore_patterns(".dvc"))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["orchestration"]["task_runner"] = "dask"
    (copy / "params.yaml").write_text(yaml.safe_dump(params))
    out = run([str(BIN / "python"), "-m", "flows.hdm_relabel_retrain"], copy, {**env, "PREFECT_TASKS_REFRESH_CACHE": "true"})
    assert "local Dask cluster" in out.stderr
    assert "Task run 'relabel-" in out.stdout + out.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(proj / "data/hdm_proposals.parquet"),
                                  pd.read_parquet(copy / "data/hdm_proposals.parquet"))


def test_threshold_change_reruns_only_selection_onwards_and_metrics_diff(project):
    proj, env, _ = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    old_hard = json.loads((proj / "reports/hard_classes.json").read_text())["names"]
    params["hard_classes"]["threshold"] = 0.05
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    changed = run(["dvc", "repro"], proj, env)
    ran = ran_stages(changed.stdout)
    assert ran[0] == "select_hard_classes" and "evaluate_merged" in ran
    assert not {"prepare_data", "hard_region_boxes", "train_image_model", "per_class_iou"} & set(ran), ran
    new = json.loads((proj / "reports/hard_classes.json").read_text())
    assert new["threshold"] == 0.05 and all(c["iou"] < 0.05 for c in new["classes"])

    diff = json.loads(run(["dvc", "params", "diff", "--json"], proj, env).stdout)
    change = diff["params.yaml"]["hard_classes.threshold"]
    assert (change["old"], change["new"]) == (0.5, 0.05)
    metrics = json.loads(run(["dvc", "metrics", "diff", "--json"], proj, env).stdout)
    if sorted(new["names"]) != sorted(old_hard):  # the hard set changed: the diff must show it
        changed_keys = metrics["reports/metrics.json"]
        assert "hard_classes.count" in changed_keys or any(k.startswith("hard.") for k in changed_keys)


def test_threshold_sweep_with_dvc_queue_and_report(project):
    """`dvc exp run -S ... --queue` + `dvc queue start`, then `nightlab report threshold-sweep`."""
    proj, env, _ = project
    run(["git", "add", "-A"], proj, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "threshold 0.05"], proj, env)
    run(["dvc", "exp", "run", "-S", "hard_classes.threshold=0.3,0.6", "--queue"], proj, env)
    # The queue worker is a daemon that inherits stdout: send its output to a file, then poll.
    with open(proj.parent / "queue.log", "w") as log:
        subprocess.run(["dvc", "queue", "start"], cwd=proj, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1500)
    deadline = time.time() + 1200
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], proj, env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert status.count("Success") == 2, status
    res = run([str(BIN / "nightlab"), "report", "threshold-sweep"], proj, env)
    md = (proj / "reports/sweep/threshold_sweep.md").read_text()
    for thr in ("| 0.05 |", "| 0.3 |", "| 0.6 |"):
        assert thr in md, md
    assert (proj / "reports/sweep/threshold_sweep.png").is_file() and "Thres." in res.stdout
