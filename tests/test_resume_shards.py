"""A stage killed part-way resumes from its persisted, content-keyed Prefect task results.

prepare_data generates scenes in shards (Prefect tasks keyed by a digest of the params and the
shard). We SIGKILL the stage once k of its n shards have finished, rerun it, and count from the
logs that the rerun computed only the n - k unfinished shards and took the rest from the cache.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import copy_project

pytestmark = pytest.mark.e2e
DONE = re.compile(r"Task run '(generate-\S+)' - Finished in state (Completed|Cached)")


def test_killed_prepare_data_rerun_computes_only_unfinished_shards(tmp_path, stage_env):
    proj = copy_project(tmp_path / "proj")
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["data"]["synthetic"].update(height=128, width=256, train=96, val=16, test=16)  # 6+1+1 shards of 16
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    n = 8

    proc = subprocess.Popen([sys.executable, "-u", "-m", "flows.prepare_data"], cwd=proj, env=stage_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finished: set[str] = set()
    deadline = time.time() + 600
    for line in proc.stdout:
        m = DONE.search(line)
        if m:
            finished.add(m.group(1))
        if len(finished) >= 2 or time.time() > deadline:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    k = len(finished)
    assert 1 <= k < n, f"kill came too late or too early: {k} of {n} shards had finished"
    assert not (proj / "data/manifest.parquet").exists(), "a killed stage must not leave a manifest"

    rerun = subprocess.run([sys.executable, "-m", "flows.prepare_data"], cwd=proj, env=stage_env,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    states = dict(DONE.findall(rerun.stdout + rerun.stderr))
    assert len(states) == n, states
    computed = {name for name, state in states.items() if state == "Completed"}
    cached = {name for name, state in states.items() if state == "Cached"}
    assert cached >= finished, f"finished before the kill but recomputed: {finished - cached}"
    assert len(computed) <= n - k, f"rerun computed {len(computed)} shards, expected at most {n - k}"
    assert (proj / "data/manifest.parquet").is_file()
