"""Fixtures: a real Prefect server, and a tiny-profile project after one full `dvc repro`.

The shared helpers (project copies, the Prefect server, the stage environment) live in
tests/scaffold.py, which the benchmarks use too.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from scaffold import BIN, ROOT, PrefectServer, commit, copy_project

__all__ = ["BIN", "ROOT", "copy_project", "dag_stages", "ran_stages", "run"]


def run(cmd, cwd, env, check: bool = True, timeout: float = 1500) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n"
                             f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def dag_stages(proj: Path, env: dict | None = None) -> list[str]:
    """The stages DVC builds from dvc.yaml (a foreach stage expanded, e.g. check_source@<name>)."""
    env = env or {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return run(["dvc", "stage", "list", "--name-only"], proj, env).stdout.split()


def ran_stages(output: str) -> list[str]:
    """The stages `dvc repro` ran, from its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server on 127.0.0.1 at a free port, with its own PREFECT_HOME."""
    server = PrefectServer()
    yield server
    server.stop()


@pytest.fixture
def stage_env(prefect_server) -> dict:
    """Environment for running stages and DVC in a project copy against the test Prefect server."""
    return prefect_server.env()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, prefect_server):
    """A tiny-profile project copy after one full ``dvc repro``, committed with its dvc.lock.

    Shared and read-only: a test that changes anything takes its own copy (``run_copy``), so no
    test depends on another having run. ``trace`` lists the params keys each stage read.
    """
    proj = copy_project(tmp_path_factory.mktemp("tiny-run") / "proj")
    trace = proj.parent / "params_trace.jsonl"
    env = {**prefect_server.env(), "NIGHTLAB_PARAMS_TRACE": str(trace)}
    out = run(["dvc", "repro"], proj, env).stdout
    commit(proj, "run")
    reads = [json.loads(line) for line in trace.read_text().splitlines()]
    return SimpleNamespace(path=proj, output=out, reads=reads, env=prefect_server.env())


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """This test's own copy of the completed tiny run (git history, DVC cache and outputs included)."""
    dest = tmp_path / "proj"
    shutil.copytree(tiny_run.path, dest, symlinks=True, ignore=_dvc_tmp)
    return dest


def _dvc_tmp(directory: str, names: list[str]) -> list[str]:
    """DVC's tmp/ (locks, the state database of the original's inodes) stays behind."""
    return ["tmp"] if Path(directory).name == ".dvc" else []
