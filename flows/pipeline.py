"""The whole pipeline as one Prefect flow: DVC's own DAG, one task per stage.

The stage list and its order come from DVC (``repo.index.graph``), never from a list kept here,
so a stage added to dvc.yaml is picked up as is. Each task runs ``dvc repro --single-item
<stage>``: DVC still decides what is stale, so an up-to-date stage costs one status check.
Stages run one at a time: DVC locks the repo around each stage and read/write-locks the deps
and outs of the stage it runs, so a second concurrent repro fails instead of waiting.

Command line: ``python -m flows.pipeline [--retries N] [--force] [targets...]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FailedRun
from prefect.states import Completed, Failed

from flows.common import PARENT_CONTEXT_ENV, handed_context
from flows.paths import HARD_CLASSES, IMAGE_METRICS, IMAGE_REPORTS, LAST_METRICS, MERGED_REPORTS, METRICS
from nightlab import variants

METRICS_FILES = (METRICS, IMAGE_METRICS)  # first that exists wins
# The per-class tables the stages write, with the metrics file that goes with each; first that exists wins.
PER_CLASS_FILES = ((MERGED_REPORTS / "per_class_iou.csv", METRICS),
                   (IMAGE_REPORTS / "per_class_iou.csv", IMAGE_METRICS))
TAIL_LINES = 30
RETRY_DELAY_S = 10
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# DVC's repo lock, or the read/write lock on the deps and outs of a stage another repro is running.
LOCKED = re.compile(r"Unable to acquire lock|is busy, it is being blocked by")


# ---------------------------------------------------------------------------- the DAG, from DVC

def _address(stage, root: Path) -> str:
    """How ``dvc repro`` names a stage when run from the repo root (``name`` or ``path:name``)."""
    rel = Path(os.path.relpath(stage.path, root)).as_posix()
    name = getattr(stage, "name", None)
    if name is None:
        return rel  # a .dvc file stage
    return name if rel == "dvc.yaml" else f"{rel}:{name}"


def _target(target: str, root: Path) -> str:
    """A target as ``dvc repro`` reads it from the repo root (``name``, ``file:name`` or a dvc file),
    made absolute so it does not depend on this process's working directory."""
    path, sep, name = target.rpartition(":")
    if not sep:
        path, name = (target, "") if target.endswith((".yaml", ".yml", ".dvc")) else ("dvc.yaml", target)
    return f"{root / path}:{name}" if name else str(root / path)


def plan(root: str | Path = ".", targets: list[str] | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """Stages to run for ``targets`` (default: all of the root dvc.yaml, as ``dvc repro`` does)
    with their upstream stages, in dependency order, and each stage's direct upstream stages."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        root = Path(repo.root_dir)
        graph = repo.index.graph.copy()  # edges point from a stage to the stages it depends on
        for stage in list(graph):
            if stage.frozen:  # as `dvc repro`: a frozen stage does not pull its upstream in
                graph.remove_edges_from(list(graph.out_edges(stage)))
        wanted = []
        for target in targets or ["dvc.yaml"]:
            wanted += repo.stage.collect(_target(target, root))
        keep = set(wanted).union(*(nx.descendants(graph, s) for s in wanted))
        sub = graph.subgraph(keep)
        # Ties between independent stages are broken by their position in the dvc files.
        position = {s: i for i, s in enumerate(repo.index.stages)}
        order = list(nx.lexicographical_topological_sort(sub.reverse(copy=False), key=position.__getitem__))
        deps = {_address(s, root): [_address(d, root) for d in sub.successors(s)] for s in order}
        return [_address(s, root) for s in order], deps


def stage_order(root: str | Path = ".", targets: list[str] | None = None) -> list[str]:
    """The stages of the DAG in the order the pipeline runs them."""
    return plan(root, targets)[0]


def repo_root(start: str | Path = ".") -> Path:
    from dvc.repo import Repo

    return Path(Repo.find_root(str(start)))


# ---------------------------------------------------------------------------- one stage

def _stage_env(api_url: str | None) -> dict[str, str]:
    # The stage commands say `python`/`dvc`: make them this environment's, whatever PATH says.
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """Stop a stage's ``dvc repro`` and everything it started: SIGTERM to its process group, then
    SIGKILL if it is still there after ``grace_s`` (a stuck child must not keep DVC's lock)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@task(cache_policy=NO_CACHE, retry_delay_seconds=RETRY_DELAY_S)
def repro_stage(stage: str, root: str, force: bool = False, api_url: str | None = None):
    """``dvc repro --single-item <stage>``, its output streamed line by line into the run log.

    The stage's own flow run is linked to this task in the Prefect UI (a subflow of the pipeline
    run): this task's run context is handed to the stage process (flows.common.parent_context).
    """
    log = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *(["--force"] if force else []), stage]
    log.info(f"$ {' '.join(cmd[2:])}")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    ran = force
    env = _stage_env(api_url)
    with handed_context() as context_file:
        env[PARENT_CONTEXT_ENV] = str(context_file)
        rc, ran = _stream(stage, cmd, root, env, tail, log, ran)
    if rc != 0:
        # A returned Failed state (not an exception) still triggers retries, and keeps the
        # message readable: the stage's own output instead of a traceback of this function.
        hint = ("another DVC command is running in this project; run again when it has finished "
                "(or use --retries)\n" if any(LOCKED.search(line) for line in tail) else "")
        return Failed(message=f"`dvc repro --single-item {stage}` exited with {rc}; {hint}last lines:\n"
                      + "\n".join(tail))
    status = "ran" if ran else "up to date"
    return Completed(message=status, data=status)


def _stream(stage: str, cmd: list[str], root: str, env: dict, tail: deque, log, ran: bool) -> tuple[int, bool]:
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1,
                            start_new_session=True)  # its own process group: _stop reaches the stage too
    try:
        for line in proc.stdout:
            line = ANSI.sub("", line.rstrip())
            if line:
                tail.append(line)
                log.info(line)
                ran = ran or line.startswith(f"Running stage '{stage}'")
        return proc.wait(), ran
    finally:
        if proc.poll() is None:  # cancelled or interrupted: don't leave a repro holding the lock
            _stop(proc)


# ---------------------------------------------------------------------------- metrics artifacts

def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def read_metrics(root: Path) -> tuple[str, dict] | None:
    for rel in METRICS_FILES:
        if (root / rel).is_file():
            return rel.as_posix(), _flatten(json.loads((root / rel).read_text()))
    return None


def _fmt(v, signed: bool = False) -> str:
    """A fraction, in percent."""
    return "n/a" if v is None else (f"{100 * v:+.2f}" if signed else f"{100 * v:.1f}")


def _pct(v) -> str | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}"


def _interval(metrics: dict, name: str, prefix: str = "") -> str | None:
    d, lo, hi = (metrics.get(f"{name}.{prefix}{k}") for k in ("diff", "ci_low", "ci_high"))
    if d is None:
        return None
    def signed(x):
        return f"{100 * x + 0.0:+.1f}".replace("-0.0", "+0.0")

    return signed(d) + (f" [{signed(lo)}, {signed(hi)}]" if lo is not None and hi is not None else "")


def per_class_rows(root: Path) -> tuple[str, list[dict]] | None:
    """The rows of the ``nightlab-per-class-iou`` artifact, from the per-class table the pipeline
    wrote (evaluate_merged's, else per_class_iou's for the image level alone): one row per class
    with its IoU in % per variant and whether it is hard, then each variant's mIoU on all and on the
    hard classes, then each claimed difference with its paired-bootstrap 95% interval, under the
    column of the variant it is claimed for. ``None`` while no table exists."""
    import pandas as pd

    found = next(((t, m) for t, m in PER_CLASS_FILES if (root / t).is_file()), None)
    if found is None:
        return None
    table_path, metrics_path = found
    table = pd.read_csv(root / table_path)
    metrics = _flatten(json.loads((root / metrics_path).read_text())) if (root / metrics_path).is_file() else {}
    if "iou" in table.columns:  # per_class_iou's table: the image level alone
        table = table.rename(columns={"iou": variants.IMAGE})
    if "hard" not in table.columns:
        hard_file = root / HARD_CLASSES
        names = set(json.loads(hard_file.read_text()).get("names", [])) if hard_file.is_file() else set()
        table["hard"] = table.class_name.isin(names)
    table["hard"] = table.hard.astype(str).str.lower().isin(("true", "1", "yes"))
    shown = [v for v in (*variants.HEADLINE, *(c for c in table.columns if c.startswith("baseline_")))
             if v in table.columns]
    label = {v: variants.SHORT.get(v, v) for v in shown}
    rows = [{"class": r.class_name, "hard": "yes" if r.hard else "", **{label[v]: _pct(getattr(r, v)) for v in shown}}
            for r in table.itertuples()]
    hard = table[table.hard]
    for what, sub_table, key in (("mIoU, all classes", table, "mIoU"), ("mIoU, hard classes", hard, "hard_mIoU")):
        if sub_table.empty:
            continue
        # the headline's own numbers where the metrics hold them (the same, rounded), else the table's mean
        rows.append({"class": what, "hard": "", **{label[v]: _pct(metrics.get(variants.metric(v, key),
                                                                             sub_table[v].mean())) for v in shown}})
    for claim in variants.CLAIMS:
        if claim.a not in label:
            continue
        for prefix, what in (("", "all classes"), ("hard_", "hard classes")):
            ci = _interval(metrics, claim.name, prefix)
            if ci is not None:
                rows.append({"class": f"{claim.short}, {what} (95% CI)", "hard": "",
                             **{label[v]: ci if v == claim.a else None for v in shown}})
    return table_path.as_posix(), rows


def publish_metrics(root: Path) -> None:
    """A per-class IoU table and an mIoU summary with the change since the previous pipeline run.

    The previous run's metrics are kept in ``.prefect-cache/last_metrics.json`` (ignored by git):
    local to the project, so it works with or without a Prefect server and follows the project.
    """
    log = get_run_logger()
    found = read_metrics(root)
    if found is None:
        log.info(f"no metrics yet ({' or '.join(map(str, METRICS_FILES))}): no artifacts published")
        return
    path, metrics = found
    shown = [k[: -len(".mIoU")] for k in metrics if k.endswith(".mIoU")]
    table = per_class_rows(root)
    if table is not None:
        create_table_artifact(table[1], key="nightlab-per-class-iou",
                              description=f"Per-class IoU (%) by variant, from {table[0]} and {path}: hard classes "
                                          "marked, then mIoU on all and on hard classes, then the claimed "
                                          "differences with their paired-bootstrap 95% intervals")

    last_file = root / LAST_METRICS
    last = json.loads(last_file.read_text()) if last_file.is_file() else {}
    prev = last.get("metrics", {})
    since = f" (previous run: {last['time']})" if "time" in last else " (no previous run recorded)"
    lines = [f"### NightLab mIoU (%), from `{path}`{since}", "", "| variant | mIoU | previous | change |",
             "| --- | ---: | ---: | ---: |"]
    for v in shown:
        new, old = metrics.get(f"{v}.mIoU"), prev.get(f"{v}.mIoU")
        change = new - old if new is not None and old is not None else None
        lines.append(f"| {v} | {_fmt(new)} | {_fmt(old)} | {_fmt(change, signed=True)} |")
    create_markdown_artifact("\n".join(lines), key="nightlab-metrics",
                             description="mIoU per variant and the change since the previous pipeline run")
    last_file.parent.mkdir(parents=True, exist_ok=True)
    last_file.write_text(json.dumps({"time": datetime.now(UTC).isoformat(timespec="seconds"),
                                     "source": path, "metrics": metrics}, indent=1))
    log.info("\n".join(lines))


# ---------------------------------------------------------------------------- the flow

def _stage_api_url() -> str | None:
    """Without a configured server this process runs a temporary one: point the stages at it,
    so their runs land next to this one and each skips starting its own (5-10 s)."""
    from prefect import get_client
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return None  # the stages read the same settings
    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    return url if url.startswith("http") else None


@flow(name="pipeline")
def pipeline(targets: list[str] | None = None, retries: int = 0, force: bool = False):
    """Run the DVC DAG stage by stage; a failed stage skips what depends on it."""
    from dvc.exceptions import DvcException

    log = get_run_logger()
    try:
        root = repo_root()
        order, deps = plan(root, targets)
    except DvcException as err:
        return Failed(message=f"cannot read the DVC pipeline: {err}")
    log.info(f"stages in DAG order: {', '.join(order)}")
    api_url = _stage_api_url()
    states = {}
    for name in order:
        task_ = repro_stage.with_options(task_run_name=name, retries=retries)
        # wait_for on the upstream states: a failed upstream leaves this task NotReady (not run).
        states[name] = task_(name, str(root), force, api_url, wait_for=[states[d] for d in deps[name]],
                             return_state=True)

    failed = [n for n in order if states[n].is_failed()]
    not_run = [n for n in order if not states[n].is_final()]
    for n in order:
        status = ("FAILED" if n in failed else "not run (upstream failed)" if n in not_run
                  else states[n].message or "done")
        log.info(f"{n:<28} {status}")
    if failed:
        skipped = f"; not run: {', '.join(not_run)}" if not_run else ""
        details = "\n".join(f"--- {n}: {states[n].message}" for n in failed)
        return Failed(message=f"stage {', '.join(failed)} failed{skipped}\n{details}")
    publish_metrics(root)
    return {n: states[n].message for n in order}


def run(targets: list[str] | None = None, retries: int = 0, force: bool = False) -> int:
    """Run the flow once; print a clear error and return 1 when a stage fails."""
    try:
        pipeline(targets=targets or None, retries=retries, force=force)
    except FailedRun as err:
        print(f"error: pipeline failed: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        if "ephemeral" not in str(err):
            raise
        # A busy machine can be slower than Prefect's 20 s start-up limit for its temporary server.
        print(f"error: {err}\nexport PREFECT_API_URL=http://127.0.0.1:4200/api, then start a server once "
              "(`prefect server start --port 4200`), "
              "or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description="Run the DVC pipeline as a Prefect flow.")
    ap.add_argument("targets", nargs="*", help="stages to run, with what they depend on (default: all of dvc.yaml)")
    ap.add_argument("--retries", type=int, default=0, metavar="N", help="retries of a failed stage (default: 0)")
    ap.add_argument("--force", action="store_true", help="rerun stages even if DVC finds them up to date")
    args = ap.parse_args(argv)
    return run(args.targets, args.retries, args.force)


if __name__ == "__main__":
    sys.exit(main())
