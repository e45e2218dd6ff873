"""Memory and wall time of every stage: each stage's cmd from dvc.yaml, in dependency order, in a
project copy (default profile; tiny with --quick), against the runner's Prefect server. Peak
resident memory comes from ``/usr/bin/time -v`` (or, where it is missing, a python launcher
reading getrusage(RUSAGE_CHILDREN).ru_maxrss); both count the stage process and any process it
waited for. The sum of the stage times is the ``dvc repro``-equivalent wall time (DVC's own
hashing and caching excluded).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

from benches.common import ROOT, copy_project, figure, prefect_server, sh, temp_dir
from flows.pipeline import plan

RSS_TARGET_GIB, WALL_TARGET_MIN = 4.0, 15.0
LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


def stage_order(proj: Path) -> list[tuple[str, str]]:
    """(name, cmd) of every stage of ``proj`` in the order the pipeline runs them, as DVC resolves them
    (foreach stages expanded to ``name@key``): flows.pipeline.plan and DVC's own stage objects."""
    from dvc.repo import Repo

    order, _ = plan(proj)
    with Repo(str(proj)) as repo:
        cmds = {stage.addressing: stage.cmd for stage in repo.index.stages}
    return [(name, cmds[name]) for name in order]


def measure(cmd: str, cwd: Path, env: dict, report: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GiB) of one stage command."""
    args = shlex.split(cmd)
    if shutil.which("time", path="/usr/bin"):
        wrapped = ["/usr/bin/time", "-v", "-o", str(report), *args]
    else:
        wrapped = [sys.executable, "-c", LAUNCHER, str(report), *args]
    t0 = time.perf_counter()
    sh(wrapped, cwd, env, timeout=4 * 3600)
    wall = time.perf_counter() - t0
    text = report.read_text()
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    kib = int(m.group(1)) if m else int(text.strip())
    return wall, kib / 2**20


def run(quick: bool) -> dict:
    profile = "profiles/tiny.yaml" if quick else "params.yaml"
    tmp = temp_dir("memory")
    proj = copy_project(tmp / "proj", profile)
    env = prefect_server().env()
    rows, figures = [], []
    for name, cmd in stage_order(proj):
        wall, rss = measure(cmd, proj, env, tmp / f"{name}.time")
        rows.append(dict(stage=name, wall_s=wall, peak_rss_gib=rss))
        figures.append(figure(f"{name}: peak RSS", rss, "GiB", f"<= {RSS_TARGET_GIB:g} GiB", rss <= RSS_TARGET_GIB,
                              summary=False))
        figures.append(figure(f"{name}: wall time", wall, "s"))
    total_min = sum(r["wall_s"] for r in rows) / 60
    peak = max(r["peak_rss_gib"] for r in rows)
    figures[:0] = [figure("all stages: wall time", total_min, "min", f"<= {WALL_TARGET_MIN:g} min on 2 CPU cores",
                          total_min <= WALL_TARGET_MIN),
                   figure("largest stage peak RSS", peak, "GiB", f"<= {RSS_TARGET_GIB:g} GiB", peak <= RSS_TARGET_GIB)]
    tool = "/usr/bin/time -v" if shutil.which("time", path="/usr/bin") else "getrusage launcher"
    return {
        "title": "Memory and wall time per stage",
        "setup": f"profile {profile} ({'tiny' if quick else 'default'}), stage cmds from dvc.yaml in dependency "
                 f"order with a Prefect server, {len(os.sched_getaffinity(0))} usable CPU cores, peak RSS by {tool}",
        "repeat": "1 (one pipeline run)",
        "figures": figures,
        "raw": {"stages": rows, "project_source": str(ROOT)},
    }
