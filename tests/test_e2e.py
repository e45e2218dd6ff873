"""End to end: the real `dvc repro` on the tiny profile in a temporary copy of the project.

Each test stands on its own: the full run (`tiny_run`) is shared read-only, and a test that
changes anything works on its own copy of it (`run_copy`).
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BIN, ROOT, dag_stages, ran_stages, run
from scaffold import commit

from flows.common import declared_params

pytestmark = pytest.mark.e2e
STREET = ROOT.parent / "shared" / "fixtures" / "street_day_1024x512.png"


def _set_params(proj: Path, **changes) -> None:
    params = yaml.safe_load((proj / "params.yaml").read_text())
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = params
        for k in parents:
            node = node[k]
        node[last] = value
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_full_repro_runs_every_stage_and_writes_reports(tiny_run):
    proj = tiny_run.path
    assert sorted(ran_stages(tiny_run.output)) == sorted(dag_stages(proj))
    manifest = pd.read_parquet(proj / "data/manifest.parquet")
    assert set(manifest.domain) == {"day", "night"} and set(manifest.split) == {"train", "val", "test"}
    hard = json.loads((proj / "reports/hard_classes.json").read_text())
    assert hard["threshold"] == 0.3 and all(c["iou"] < 0.3 for c in hard["classes"])
    metrics = json.loads((proj / "reports/metrics.json").read_text())
    for variant in ("image", "merged_rdn", "merged_hdm", "merged_gt"):
        assert 0.0 <= metrics[f"{variant}.mIoU"] <= 1.0
    # The headline's image level agrees with the per_class_iou stage's score of the same report split.
    image = json.loads((proj / "reports/image/metrics.json").read_text())
    assert metrics["image.mIoU"] == pytest.approx(image["image.report.mIoU"], abs=1e-6)
    proposals = pd.read_parquet(proj / "data/hdm_proposals.parquet")
    assert {"iou_region", "iou_image", "orig_positive", "v", "new_label"} <= set(proposals.columns)
    assert ((proposals.new_label == 1) <= (proposals.orig_positive & (proposals.v == 1))).all()
    for fig in ("reports/data/samples.png", "reports/merged/panel.png", "reports/merged/per_class_iou.png"):
        assert cv2.imread(str(proj / fig)) is not None, fig
    # Every plot dvc.yaml declares is a PNG the stage drew (dvc plots show works offline).
    lock = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]
    pngs = [o["path"] for s in lock.values() for o in s.get("outs", []) if o["path"].endswith("_curve.png")]
    assert len(pngs) >= 5 and all(cv2.imread(str(proj / f)) is not None for f in pngs), pngs
    assert "| Method |" in (proj / "reports/README.md").read_text()


def test_every_stage_reads_exactly_the_params_it_declares(tiny_run):
    """Reading an undeclared key fails the stage at once (ParamsView); here, the other direction:
    a declared key that no code reads would rerun the stage for nothing."""
    stages = dag_stages(tiny_run.path)
    for record in tiny_run.reads:
        declared = set(declared_params(record["stage"], tiny_run.path / "dvc.yaml"))
        read = set(record["read"])
        unread = {k for k in declared if not any(r == k or r.startswith(k + ".") for r in read)}
        assert not unread, f"{record['stage']} declares params it never reads: {sorted(unread)}"
    assert {r["stage"] for r in tiny_run.reads} == set(stages)


def test_noop_rerun_executes_nothing(run_copy, stage_env):
    again = run(["dvc", "repro"], run_copy, stage_env)
    assert ran_stages(again.stdout) == [], again.stdout


@pytest.mark.skipif(not STREET.is_file(), reason=f"the real street photo is not here ({STREET})")
def test_predict_on_the_real_street_photo(tiny_run, tmp_path):
    res = run([BIN / "nightlab", "predict", STREET, "--out", tmp_path / "pred"], tiny_run.path, tiny_run.env)
    lab = cv2.imread(str(tmp_path / "pred" / f"{STREET.stem}_trainIds.png"), cv2.IMREAD_UNCHANGED)
    assert lab.shape == cv2.imread(str(STREET)).shape[:2] and lab.max() < 19, res.stdout
    # The tiny run trained on the synthetic city, as its models' config.json records: one warning line.
    assert [line for line in res.stderr.splitlines() if line.startswith("warning:")] == [
        line for line in res.stderr.splitlines() if "synthetic data only" in line], res.stderr
    assert "synthetic data only" in res.stderr


def test_predict_odd_size_and_unreadable_file(tiny_run, tmp_path):
    odd = tmp_path / "odd size.jpg"  # a jpg of a size the models never saw
    cv2.imwrite(str(odd), np.random.default_rng(0).integers(0, 255, (97, 203, 3), dtype=np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    res = run([BIN / "nightlab", "predict", odd, broken, "--out", tmp_path / "pred"], tiny_run.path, tiny_run.env,
              check=False)
    assert res.returncode == 1, res.stdout + res.stderr  # some failed
    assert "broken.png" in res.stderr
    lab = cv2.imread(str(tmp_path / "pred" / f"{odd.stem}_trainIds.png"), cv2.IMREAD_UNCHANGED)
    assert lab.shape == (97, 203) and lab.max() < 19
    assert (tmp_path / "pred" / f"{odd.stem}_overlay.png").is_file()
    assert (tmp_path / "pred" / f"{odd.stem}_color.png").is_file()


def test_export_matches_eager(tiny_run, tmp_path):
    res = run([BIN / "nightlab", "export", "--out", tmp_path / "export"], tiny_run.path, tiny_run.env)
    assert "image_model" in res.stdout and "region_model" in res.stdout
    assert (tmp_path / "export" / "image_model.torchscript.pt").is_file()


def test_hdm_relabel_shards_on_dask_match_threads(run_copy, stage_env, tiny_run):
    """The HDM relabel shards on a local Dask cluster (2 worker processes) score every proposal
    exactly as the thread runner did in the full run."""
    _set_params(run_copy, orchestration__task_runner="dask")
    env = {**stage_env, "PREFECT_TASKS_REFRESH_CACHE": "true"}
    out = run([BIN / "python", "-m", "flows.hdm_relabel_retrain"], run_copy, env)
    assert "local Dask cluster" in out.stderr
    assert "Task run 'relabel training images 0-" in out.stdout + out.stderr and " of " in out.stdout + out.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tiny_run.path / "data/hdm_proposals.parquet"),
                                  pd.read_parquet(run_copy / "data/hdm_proposals.parquet"))


def test_threshold_change_reruns_only_selection_onwards_and_metrics_diff(run_copy, stage_env):
    proj = run_copy
    old_hard = json.loads((proj / "reports/hard_classes.json").read_text())["names"]
    _set_params(proj, hard_classes__threshold=0.05)
    changed = run(["dvc", "repro"], proj, stage_env)
    ran = ran_stages(changed.stdout)
    assert ran[0] == "select_hard_classes" and "evaluate_merged" in ran
    assert not {"prepare_data", "hard_region_boxes", "train_image_model", "per_class_iou"} & set(ran), ran
    new = json.loads((proj / "reports/hard_classes.json").read_text())
    assert new["threshold"] == 0.05 and all(c["iou"] < 0.05 for c in new["classes"])

    diff = json.loads(run(["dvc", "params", "diff", "--json"], proj, stage_env).stdout)
    change = diff["params.yaml"]["hard_classes.threshold"]
    assert (change["old"], change["new"]) == (0.3, 0.05)
    metrics = json.loads(run(["dvc", "metrics", "diff", "--json"], proj, stage_env).stdout)
    if sorted(new["names"]) != sorted(old_hard):  # the hard set changed: the diff must show it
        assert "hard_classes.count" in metrics["reports/metrics.json"]
    # Read in a terminal: every line fits 120 columns, the headline mIoUs that changed are there (the
    # new hard set changes NightLab's hard-class mIoU at least; its mIoU can stay put where the margin
    # merge keeps Φ^I's pixels), per-class rows are not.
    table = run(["dvc", "metrics", "diff"], proj, stage_env).stdout
    assert table.strip() and max(map(len, table.splitlines())) <= 120, table
    headline = [k for k in metrics["reports/metrics.json"] if k.startswith("merged_hdm.") and k.endswith("mIoU")]
    assert all(k in table for k in headline), (headline, table)
    if sorted(new["names"]) != sorted(old_hard):
        assert "merged_hdm.hard_mIoU" in headline, (headline, table)
    assert ".iou." not in table, table


def test_a_threshold_that_selects_the_same_classes_retrains_nothing(run_copy, stage_env):
    """The region stages depend on data/hard_set.json alone: only the selection and the report rerun."""
    proj = run_copy
    hard = json.loads((proj / "reports/hard_classes.json").read_text())
    table = pd.read_csv(proj / "reports/image/per_class_iou.csv").dropna(subset=["iou"])
    above = sorted(v for v in table.iou if v >= hard["threshold"])
    same = (hard["threshold"] + above[0]) / 2 if above else min(1.0, hard["threshold"] + 0.1)
    _set_params(proj, hard_classes__threshold=round(same, 6))
    out = run(["dvc", "repro"], proj, stage_env).stdout
    assert json.loads((proj / "reports/hard_classes.json").read_text())["names"] == hard["names"]
    assert ran_stages(out) == ["select_hard_classes", "evaluate_merged"], out[-3000:]


def test_threshold_sweep_with_dvc_queue_and_report(run_copy, stage_env):
    """`dvc exp run -S ... --queue` + `dvc queue start`, then `nightlab report threshold-sweep`."""
    proj = run_copy
    run(["dvc", "exp", "run", "-S", "hard_classes.threshold=0.5,0.6", "--queue"], proj, stage_env)
    # The queue worker is a daemon that inherits stdout: send its output to a file, then poll.
    with open(proj.parent / "queue.log", "w") as log:
        subprocess.run(["dvc", "queue", "start"], cwd=proj, env=stage_env, stdout=log, stderr=subprocess.STDOUT,
                       timeout=1500)
    deadline = time.time() + 1200
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], proj, stage_env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert status.count("Success") == 2, status
    res = run([BIN / "nightlab", "report", "threshold-sweep"], proj, stage_env)
    md = (proj / "reports/sweep/threshold_sweep.md").read_text()
    for thr in ("| 0.5 |", "| 0.3 |", "| 0.6 |"):
        assert thr in md, md
    assert (proj / "reports/sweep/threshold_sweep.png").is_file() and "Thres." in res.stdout
    prov = json.loads((proj / "reports/sweep/provenance.json").read_text())
    assert f"`{prov['git_rev']}`" in md and len(prov["dvc_lock_md5"]) == 32
    assert "current  reports/sweep" in run([BIN / "nightlab", "report", "status"], proj, stage_env).stdout
    # Judged on the stages it used, as recorded with it: one of them measured with another threshold.
    assert {"select_hard_classes", "evaluate_merged"} <= set(prov["stages"])
    then = json.loads(json.dumps(prov))
    then["stages"]["select_hard_classes"]["params"]["hard_classes.threshold"] = 0.99
    (proj / "reports/sweep/provenance.json").write_text(json.dumps(then))
    stale = run([BIN / "nightlab", "report", "status"], proj, stage_env, check=False)
    assert stale.returncode == 1 and "STALE    reports/sweep" in stale.stdout
    assert "select_hard_classes" in stale.stdout and "hard_classes.threshold 0.99 -> 0.3" in stale.stdout
    (proj / "reports/sweep/provenance.json").write_text(json.dumps(prov))
    commit(proj, "sweep")


def test_external_torchscript_image_model_and_window_through_dvc(run_copy, stage_env, tiny_run):
    """image_model.external: the exported image model stands in for training (train_image_model checks
    and copies it, every later stage uses it, the image-level mIoU stays that of the trained model); a
    model with the wrong output shape stops the stage with one error naming the file; then a sliding
    window reruns the stages that run the image model, and never its training."""
    import torch

    proj = run_copy
    run([BIN / "nightlab", "export", "--out", "export"], proj, stage_env)
    # a TorchScript image model has no weights the region model could start from: it starts from scratch, and
    # refines the TorchScript model's logits (region_model.prior: image, the default)
    _set_params(proj, image_model__external="export/image_model.torchscript.pt", region_model__init="scratch")
    out = run(["dvc", "repro"], proj, stage_env)
    ran = ran_stages(out.stdout)
    assert ran[0] == "train_image_model" and "evaluate_merged" in ran, ran
    assert "instead of training" in out.stdout + out.stderr
    cfg = json.loads((proj / "models/image/config.json").read_text())
    assert cfg["arch"] == "torchscript" and cfg["external"]["path"] == "export/image_model.torchscript.pt"
    assert sorted(p.name for p in (proj / "models/image").iterdir()) == ["config.json", "model.torchscript.pt"]
    assert json.loads((proj / "models/region/config.json").read_text())["prior"] == "image"
    before = json.loads((tiny_run.path / "reports/image/metrics.json").read_text())["image.mIoU"]
    after = json.loads((proj / "reports/image/metrics.json").read_text())["image.mIoU"]
    assert after == pytest.approx(before, abs=0.02)
    assert 0.0 <= json.loads((proj / "reports/metrics.json").read_text())["merged_hdm.mIoU"] <= 1.0

    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 21, 1)), str(proj / "export" / "wrong.pt"))
    _set_params(proj, image_model__external="export/wrong.pt")
    bad = run([BIN / "python", "-m", "flows.train_image_model"], proj, stage_env, check=False)
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert "error: export/wrong.pt: the model returns shape (2, 21, 64, 96)" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert json.loads((proj / "models/image/config.json").read_text()) == cfg  # untouched

    _set_params(proj, image_model__external="export/image_model.torchscript.pt", image_model__window=[32, 32])
    ran = ran_stages(run(["dvc", "repro"], proj, stage_env).stdout)
    assert "train_image_model" not in ran and {"per_class_iou", "evaluate_merged"} <= set(ran), ran


def test_confirm_on_a_fresh_test_split(run_copy, stage_env, tiny_run):
    """`nightlab confirm --data-seed N`: the trained models on scenes generated with an unused data
    seed, evaluated as evaluate_merged does; the data seed the models saw is refused."""
    proj = run_copy
    same = run([BIN / "nightlab", "confirm", "--data-seed", "0"], proj, stage_env, check=False)
    assert same.returncode == 2 and "error: --data-seed 0 is the seed" in same.stderr
    assert "Traceback" not in same.stderr
    run([BIN / "nightlab", "confirm", "--data-seed", "91", "--scenes", "3"], proj, stage_env)
    out = json.loads((proj / "reports/confirm/data_seed_91.json").read_text())
    assert out["data_seed"] == 91 and out["report.images"] == 3  # */test/night: the night render of each scene
    assert out["git_rev"] and len(out["dvc_lock_md5"]) == 32
    m = out["metrics"]
    ci = (m["hdm_vs_image.ci_low"], m["hdm_vs_image.ci_high"])
    assert ci[0] <= m["hdm_vs_image.diff"] <= ci[1]
    # the committed run's numbers are on other images: a fresh split gives other numbers
    committed = json.loads((tiny_run.path / "reports/metrics.json").read_text())
    assert m["image.mIoU"] != committed["image.mIoU"]
