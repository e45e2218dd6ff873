"""A DVC remote: push the pipeline's cache, empty it, pull, and `dvc repro` then executes nothing."""
from __future__ import annotations

import shutil

import pytest
from conftest import ran_stages, run

pytestmark = pytest.mark.e2e


def test_local_remote_push_clear_pull_then_repro_is_noop(run_copy, tmp_path, stage_env):
    proj = run_copy
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], proj, stage_env)
    run(["dvc", "push"], proj, stage_env)
    assert any(remote.rglob("*")), "push wrote nothing to the remote"

    # A new machine: no cache, no outputs.
    shutil.rmtree(proj / ".dvc" / "cache")
    for out in ("data/prepared", "data/manifest.parquet", "data/boxes.parquet", "models"):
        path = proj / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    run(["dvc", "pull"], proj, stage_env)
    assert (proj / "data/manifest.parquet").is_file() and (proj / "models/hdm/model.pt").is_file()
    again = run(["dvc", "repro"], proj, stage_env)
    assert ran_stages(again.stdout) == [], again.stdout
