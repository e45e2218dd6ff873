"""What every stage flow shares: argument parsing, clean errors, content digests for task caches."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml
from prefect.task_runners import ThreadPoolTaskRunner

from nightlab.config import ConfigError, Params, load_params
from nightlab.io import DataError


def digest(*parts) -> str:
    """A stable content key: JSON of the parts (pydantic models dumped); Paths by their contents (fingerprint)."""
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "model_dump"):
            part = part.model_dump(mode="json")
        if isinstance(part, Path):
            h.update(fingerprint(part).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def fingerprint(*paths: Path) -> str:
    """Content digest of files and directories (recursively, in sorted relative-path order)."""
    h = hashlib.sha256()
    for root in map(Path, paths):
        files = sorted(f for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts) if root.is_dir() else [root]
        for f in files:
            h.update(str(f.relative_to(root) if root.is_dir() else f).encode())
            if f.is_file():
                with f.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            else:
                h.update(b"<missing>")
    return h.hexdigest()[:32]


def stage_inputs(stage: str, dvc_file: Path = Path("dvc.yaml")) -> str:
    """Digest of the contents of a stage's deps, as dvc.yaml lists them (data and code).

    Checkpoints and task caches are keyed by it together with the params: otherwise a resumed
    run could continue from weights trained on older data or code, which DVC cannot see because
    checkpoints live outside its outs.
    """
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stages[stage].get("deps", [])]
    return fingerprint(*(Path(d) for d in deps))


def key_from_arg(context, parameters) -> str:
    """Prefect cache_key_fn: tasks pass an explicit content digest as their ``key`` argument."""
    return f"{context.task.name}-{parameters['key']}"


def run_stage(flow_fn, description: str) -> None:
    """Command-line entry of a stage: ``python -m flows.<stage> [--params params.yaml]``."""
    ap = argparse.ArgumentParser(prog=f"python -m {flow_fn.__module__}", description=description)
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = ap.parse_args()
    try:
        params = load_params(args.params)
        flow_fn.with_options(task_runner=task_runner(params.orchestration))(params)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def task_runner(cfg):
    """The Prefect task runner the params ask for (an OrchestrationConfig)."""
    if cfg.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.threads)
    from prefect_dask import DaskTaskRunner  # imported on demand: dask is heavy and optional at run time

    if cfg.dask_address:
        print(f"task runner: Dask cluster at {cfg.dask_address}", file=sys.stderr)
        return DaskTaskRunner(address=cfg.dask_address)
    print(f"task runner: local Dask cluster of {cfg.dask_workers} worker processes", file=sys.stderr)
    # One thread per worker process: the tasks are numpy/torch work that wants its own core.
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.dask_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def params_of(p: Params, *sections: str) -> dict:
    """The params sections a stage depends on, as plain JSON (stored in checkpoints to detect changes)."""
    d = p.model_dump(mode="json")
    return {s: d[s] for s in sections}
