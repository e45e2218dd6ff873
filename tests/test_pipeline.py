"""Orchestration: the pipeline flow over DVC's DAG, `nightlab schedule`, failures and DVC's lock."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, copy_project, dag_stages, stop, wait_until

from flows.pipeline import _stop, plan, stage_order
from nightlab_cli.main import main as nightlab_main

PY = str(BIN / "python")
# DVC's two locks: the repo lock (held between stage commands) and the read/write locks on a
# running stage's deps and outs (.dvc/tmp/rwlock), which is what a second repro usually meets.
LOCKED = re.compile(r"Unable to acquire lock|is busy, it is being blocked by")


def run(cmd, cwd, env, timeout=600):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_subcommand_has_help(capsys):
    from nightlab_cli.main import COMMANDS

    for argv in (["--help"], *([c.name, "--help"] for c in COMMANDS)):
        with pytest.raises(SystemExit) as exit_:
            nightlab_main(argv)
        assert exit_.value.code == 0
        assert "usage: nightlab" in capsys.readouterr().out


@pytest.mark.e2e
def test_stage_order_is_a_topological_order_of_dvc_dag():
    order = stage_order(ROOT)
    assert sorted(order) == sorted(dag_stages(ROOT))
    dot = run(["dvc", "dag", "--dot"], ROOT, {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert dot.returncode == 0, dot.stderr
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', dot.stdout)
    assert edges, dot.stdout
    pos = {s: i for i, s in enumerate(order)}
    assert all(pos[a] < pos[b] for a, b in edges), (order, edges)
    cli = run([str(BIN / "nightlab"), "stages"], ROOT, os.environ)
    assert cli.returncode == 0 and cli.stdout.split() == order, cli.stderr
    # The command finds the project from any of its sub-directories.
    deeper = run([str(BIN / "nightlab"), "stages"], ROOT / "nightlab" / "models", os.environ)
    assert deeper.returncode == 0 and deeper.stdout.split() == order, deeper.stderr


@pytest.mark.e2e
def test_schedule_registers_cron_deployment_and_runs_it(scheduled_run):
    """What `nightlab schedule` registers and what a run of its deployment records, through the API
    (tests/test_prefect_ui.py checks that the UI shows the same)."""
    dep, final, api, proj = scheduled_run.deployment, scheduled_run.flow_run, scheduled_run.api, scheduled_run.path
    assert [s["schedule"]["cron"] for s in dep["schedules"] if s["active"]] == ["0 3 * * *"]
    assert dep["parameters"] == {"retries": 1}
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{scheduled_run.log.read_text()[-4000:]}"

    assert (proj / "data/manifest.parquet").is_file() and (proj / "reports/hard_classes.json").is_file()
    tasks = api.post("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [final["id"]]}}})
    # Each stage's own flow run is a subflow of the pipeline run, tracked by a task of its own.
    children = api.post("/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"any_": [t["id"] for t in tasks]}}})
    trackers = {c["parent_task_run_id"] for c in children}
    stage_tasks = [t for t in tasks if t["id"] not in trackers]
    assert sorted(t["name"] for t in stage_tasks) == sorted(scheduled_run.stages)  # one task per stage
    assert {t["state_type"] for t in tasks} == {"COMPLETED"}
    flows_by_id = {f["id"]: f["name"] for f in api.post("/flows/filter", {})}
    assert sorted(flows_by_id[c["flow_id"]] for c in children) == sorted(scheduled_run.stages)
    artifacts = api.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [final["id"]]}}})
    assert {a["key"] for a in artifacts} >= {"nightlab-per-class-iou", "nightlab-metrics"}
    assert (proj / ".prefect-cache/last_metrics.json").is_file()


@pytest.mark.e2e
def test_failing_stage_stops_its_dependents(tmp_path, stage_env):
    proj = copy_project(tmp_path / "proj")
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["data"].update(synthetic=None, sources={"cs": {"kind": "cityscapes", "root": "data/no-such-dataset"}})
    (proj / "params.yaml").write_text(yaml.safe_dump(params))

    res = run([PY, "-m", "flows.pipeline"], proj, stage_env)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-4000:]
    assert "error: pipeline failed: stage check_source@cs failed" in res.stderr, res.stderr[-4000:]
    assert "data/no-such-dataset" in res.stderr  # the tail of the stage's output names the problem

    order, deps = plan(proj)
    dependents = {s for s in order if s != "check_source@cs" and _depends_on(s, "check_source@cs", deps)}
    assert dependents == set(order) - {"check_source@cs"}, "every other stage depends on the source's check"
    for stage in dependents:
        assert f"Running stage '{stage}'" not in out
        assert re.search(rf"{stage}\s+not run", out), stage
    assert not (proj / "data/boxes.parquet").exists() and not (proj / "models/image").exists()


def _depends_on(stage: str, upstream: str, deps: dict[str, list[str]]) -> bool:
    return any(d == upstream or _depends_on(d, upstream, deps) for d in deps[stage])


@pytest.mark.e2e
def test_second_repro_fails_on_dvc_lock(tmp_path, stage_env):
    proj = copy_project(tmp_path / "proj")
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(["dvc", "repro"], cwd=proj, env=stage_env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        wait_until("the first repro to run a stage", lambda: "Running stage '" in log.read_text(), 120, first, log)
        second = run(["dvc", "repro"], proj, stage_env, timeout=120)
        assert second.returncode != 0 and LOCKED.search(second.stderr), second.stderr
        # The pipeline reports it too, naming the stage it could not run.
        flow = run([PY, "-m", "flows.pipeline"], proj, stage_env, timeout=300)
        assert first.poll() is None, "the first repro ended before the check; the test proves nothing"
        assert flow.returncode != 0 and LOCKED.search(flow.stderr), flow.stderr[-4000:]
        assert "another DVC command is running" in flow.stderr
        assert f"stage {stage_order(proj)[0]} failed" in flow.stderr
    finally:
        stop(first)


def test_stop_kills_a_stage_that_ignores_sigterm():
    """A stuck stage must not keep DVC's lock: after the grace period it is killed, children too."""
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); "
            "print('ready', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.time()
    _stop(proc, grace_s=1)
    assert proc.poll() is not None and time.time() - t0 < 15
    # The grandchild is gone too (killed; its parent is dead, so init reaps it in a moment).
    gone = wait_until("the process group to be gone", lambda: not _group_alive(proc.pid), 10)
    assert gone


def _group_alive(pgid: int) -> bool:
    """Any process of the group still running (zombies waiting to be reaped do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
