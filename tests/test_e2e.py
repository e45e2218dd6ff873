"""End to end: the real `dvc repro` on the tiny profile in a temporary copy of the project."""
from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import copy_project

pytestmark = pytest.mark.e2e


def run(cmd, cwd, env, check=True):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def test_dvc_repro_noop_threshold_change_and_metrics_diff(tmp_path, stage_env):
    proj = copy_project(tmp_path / "proj")
    stages = list(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"])

    first = run(["dvc", "repro"], proj, stage_env)
    assert ran_stages(first.stdout) == stages or sorted(ran_stages(first.stdout)) == sorted(stages)
    manifest = pd.read_parquet(proj / "data/manifest.parquet")
    assert set(manifest.domain) == {"day", "night"} and set(manifest.split) == {"train", "val"}
    hard = json.loads((proj / "reports/hard_classes.json").read_text())
    assert hard["threshold"] == 0.5 and all(c["iou"] < 0.5 for c in hard["classes"])
    assert (proj / "reports/data/samples.png").stat().st_size > 1000
    run(["git", "add", "-A"], proj, stage_env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], proj, stage_env)

    # Nothing changed: nothing runs.
    again = run(["dvc", "repro"], proj, stage_env)
    assert ran_stages(again.stdout) == [], again.stdout

    # A new threshold re-runs selection and what follows, never the image model.
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["hard_classes"]["threshold"] = 0.05
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    changed = run(["dvc", "repro"], proj, stage_env)
    ran = ran_stages(changed.stdout)
    assert "select_hard_classes" in ran
    assert not {"prepare_data", "hard_region_boxes", "train_image_model", "per_class_iou"} & set(ran), ran
    hard = json.loads((proj / "reports/hard_classes.json").read_text())
    assert hard["threshold"] == 0.05

    diff = run(["dvc", "params", "diff", "--json"], proj, stage_env)
    change = json.loads(diff.stdout)["params.yaml"]["hard_classes.threshold"]
    assert (change["old"], change["new"]) == (0.5, 0.05)
    metrics = run(["dvc", "metrics", "diff", "--json"], proj, stage_env)
    json.loads(metrics.stdout)  # machine-readable, and the command works against HEAD
