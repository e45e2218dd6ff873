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

import yaml

from benches.common import ROOT, copy_project, figure, prefect_server, sh, temp_dir

RSS_TARGET_GIB, WALL_TARGET_MIN = 4.0, 15.0
LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


def _paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def _lookup(data, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


def _substitute(node, values: dict):
    """``${name}`` / ``${name.field}`` in every string of ``node`` from ``values`` (DVC's foreach syntax)."""
    if isinstance(node, str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(values, m.group(1))), node)
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in node.items()}
    return node


def expand_foreach(stages: dict, params: dict) -> dict:
    """dvc.yaml's ``foreach``/``do`` stages as the plain stages DVC makes of them (``name@key``), their
    list or mapping read from ``params``; a foreach over an empty mapping makes no stage."""
    out = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        items = stage["foreach"]
        if isinstance(items, str):  # "${data.sources}"
            items = _lookup(params, items.strip()[2:-1])
        pairs = items.items() if isinstance(items, dict) else enumerate(items)
        for key, item in pairs:
            out[f"{name}@{key}"] = _substitute(stage["do"], {"key": key, "item": item})
    return out


def stage_order(dvc_yaml: Path) -> list[tuple[str, str]]:
    """(name, cmd) of every stage, each after the stages whose outs it depends on (dvc.yaml order otherwise)."""
    params = yaml.safe_load((dvc_yaml.parent / "params.yaml").read_text())
    stages = expand_foreach(yaml.safe_load(dvc_yaml.read_text())["stages"], params)
    outs = {n: _paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots")) for n, s in stages.items()}

    def needs(name):
        return {o for o, paths in outs.items() if o != name for d in _paths(stages[name].get("deps"))
                for p in paths if d == p or d.startswith(p + "/") or p.startswith(d + "/")}

    order: list[str] = []
    while len(order) < len(stages):
        ready = [n for n in stages if n not in order and needs(n) <= set(order)]
        if not ready:
            raise ValueError(f"{dvc_yaml}: dependency cycle among {sorted(set(stages) - set(order))}")
        order.append(ready[0])
    return [(n, stages[n]["cmd"]) for n in order]


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
    for name, cmd in stage_order(proj / "dvc.yaml"):
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
