"""orchestration.task_runner: the fanned-out shards of a stage give identical outputs on Prefect's
thread runner and on a local Dask cluster of 2 worker processes (prefect-dask's DaskTaskRunner).

Both runs ignore Prefect's task cache (PREFECT_TASKS_REFRESH_CACHE), so every shard is really
computed by the runner under test.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import copy_project

pytestmark = pytest.mark.e2e
STAGES = ("prepare_data", "hard_region_boxes")


def _run_stages(proj, env, runner: str) -> str:
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["data"]["synthetic"].update(height=128, width=256, train=32, val=16)  # 3 generation shards
    params["orchestration"].update(task_runner=runner, dask_workers=2)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    out = ""
    for stage in STAGES:
        res = subprocess.run([sys.executable, "-m", f"flows.{stage}"], cwd=proj, env=env,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        out += res.stdout + res.stderr
    return out


def _tree_digest(root) -> dict:
    files = sorted(f for f in root.rglob("*") if f.is_file())
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_dask_runner_matches_thread_runner(tmp_path, stage_env):
    env = {**stage_env, "PREFECT_TASKS_REFRESH_CACHE": "true"}
    threads = copy_project(tmp_path / "threads")
    dask = copy_project(tmp_path / "dask")
    out_threads = _run_stages(threads, env, "threads")
    out_dask = _run_stages(dask, env, "dask")

    assert "local Dask cluster of 2 worker processes" in out_dask
    assert "Dask" not in out_threads
    for out in (out_threads, out_dask):
        assert out.count("Task run 'generate-") >= 3 and "Finished in state Cached" not in out
    assert _tree_digest(threads / "data/prepared") == _tree_digest(dask / "data/prepared")
    pd.testing.assert_frame_equal(pd.read_parquet(threads / "data/manifest.parquet"),
                                  pd.read_parquet(dask / "data/manifest.parquet"))
    boxes = pd.read_parquet(threads / "data/boxes.parquet")
    assert len(boxes) > 0
    pd.testing.assert_frame_equal(boxes, pd.read_parquet(dask / "data/boxes.parquet"))
