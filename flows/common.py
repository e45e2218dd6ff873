"""What every stage flow shares: argument parsing, clean errors, content digests for task caches."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from nightlab.config import ConfigError, Params, load_params
from nightlab.io import DataError


def digest(*parts) -> str:
    """A stable content key: JSON of the parts (pydantic models dumped), plus file hashes for Paths."""
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "model_dump"):
            part = part.model_dump(mode="json")
        if isinstance(part, Path):
            h.update(part.read_bytes() if part.is_file() else str(part).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


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
        flow_fn(params)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def params_of(p: Params, *sections: str) -> dict:
    """The params sections a stage depends on, as plain JSON (stored in checkpoints to detect changes)."""
    d = p.model_dump(mode="json")
    return {s: d[s] for s in sections}
