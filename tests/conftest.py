"""Fixtures: a real Prefect server, and a tiny-profile project after one full `dvc repro`.

The shared helpers (project copies, the Prefect server, the stage environment) live in
tests/scaffold.py, which the benchmarks use too.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from scaffold import BIN, ROOT, PrefectServer, commit, copy_project, stop

__all__ = ["BIN", "ROOT", "copy_project", "dag_stages", "ran_stages", "run", "stop", "wait_until"]


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


def wait_until(what: str, fn, timeout: float, proc=None, log=None):
    """Poll ``fn`` until it returns something truthy; fail early if ``proc`` died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f":\n{log.read_text()[-4000:]}" if log else ""))


class Api:
    """The Prefect server's REST API, retrying a busy test server's 503s as Prefect's client does."""

    def __init__(self, url: str):
        self.url = url

    def call(self, method: str, path: str, body=None) -> httpx.Response:
        for attempt in range(10):
            try:
                r = httpx.request(method, f"{self.url}{path}", json=body, timeout=30)
                if r.status_code < 500 or attempt == 9:
                    return r
            except httpx.TransportError:
                if attempt == 9:
                    raise
            time.sleep(1 + attempt)

    def get(self, path: str):
        r = self.call("GET", path)
        return r.json() if r.status_code == 200 else None

    def post(self, path: str, body):
        r = self.call("POST", path, body)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def scheduled_run(tmp_path_factory, prefect_server):
    """`nightlab schedule` serving a tiny-profile project on cron "0 3 * * *", and one run of its
    deployment on demand (as the schedule would start it), up to select_hard_classes to keep it short.

    The serving process stays up for the session, so the deployment stays scheduled; read-only.
    Yields the project, the deployment, the finished flow run, the stages it ran and the API.
    """
    from flows.pipeline import stage_order

    tmp = tmp_path_factory.mktemp("scheduled")
    proj = copy_project(tmp / "proj")
    api, name, log = Api(prefect_server.url), "test-nightly", tmp / "serve.log"
    # A short runner poll: the on-demand run below starts in seconds, not in up to 10 s.
    env = {**prefect_server.env(), "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    cmd = [str(BIN / "nightlab"), "schedule", "--cron", "0 3 * * *", "--name", name, "--retries", "1"]
    with open(log, "w") as out:
        serve = subprocess.Popen(cmd, cwd=proj, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        dep = wait_until("the deployment", lambda: api.get(f"/deployments/name/pipeline/{name}"), 120, serve, log)
        targets = ["select_hard_classes"]
        flow_run = api.post(f"/deployments/{dep['id']}/create_flow_run", {"parameters": {"targets": targets}})
        final = wait_until("the flow run to finish", lambda: (
            (fr := api.get(f"/flow_runs/{flow_run['id']}")) and fr["state_type"] in
            ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and fr), 600, serve, log)
        yield SimpleNamespace(path=proj, deployment=dep, name=name, flow_run=final, api=api, serve=serve, log=log,
                              stages=stage_order(proj, targets), ui=prefect_server.url[: -len("/api")])
    finally:
        stop(serve)


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
