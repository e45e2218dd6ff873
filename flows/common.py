"""What every stage flow shares: its entry point, clean errors, declared params, content keys.

A stage is a Prefect flow made with :func:`stage_flow` and started by :func:`stage_main`
(``python -m flows.<stage> [--params params.yaml]``, the ``cmd`` of its dvc.yaml entry):

* the flow body sees the params through a :class:`~nightlab.config.ParamsView` that allows only
  the keys its dvc.yaml entry declares, so a stage cannot depend on a value DVC does not watch;
* a mistake of the user (bad params, bad data, an operating-system error such as a full disk,
  memory too small for the batch size asked for: nightlab.errors.as_user_error) ends the flow run
  Failed with one clear message, printed as one block with exit code 2; any other exception is a
  bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from prefect import flow
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.paths import MANIFEST, PREPARED
from nightlab.config import Params, ParamsView, load_params
from nightlab.errors import ConfigError, UserError, as_user_error
from nightlab.io import name_the_output

DVC_YAML = Path("dvc.yaml")
EXIT_USER_ERROR = 2
# Set by the pipeline flow for the stage processes it starts: a file with its task's run context.
PARENT_CONTEXT_ENV = "NIGHTLAB_PREFECT_PARENT_CONTEXT"
USER_ERROR_STATE = "Stopped on user error"  # the name of the Failed state a user error ends in


class StageError(RuntimeError):
    """A stage failed for a reason already explained to the user (the message is the explanation)."""




# ---------------------------------------------------------------------------- dvc.yaml facts

def dvc_stage(stage: str, dvc_file: Path = DVC_YAML) -> dict:
    """A stage's entry in dvc.yaml (``check_source@x`` finds its ``foreach`` template)."""
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    entry = stages.get(stage) or stages.get(stage.split("@")[0])
    if entry is None:
        raise KeyError(f"{dvc_file}: no stage {stage!r}")
    return entry.get("do", entry)


def _resolve(text: str, stage: str) -> str:
    """``${key}`` of a foreach stage (``check_source@nightcity``) filled in."""
    return text.replace("${key}", stage.partition("@")[2]) if "@" in stage else text


def declared_params(stage: str, dvc_file: Path = DVC_YAML) -> list[str]:
    return [_resolve(k, stage) for k in dvc_stage(stage, dvc_file).get("params", []) if isinstance(k, str)]


def declared_deps(stage: str, dvc_file: Path = DVC_YAML) -> list[str]:
    deps = [d if isinstance(d, str) else next(iter(d)) for d in dvc_stage(stage, dvc_file).get("deps", [])]
    return [_resolve(d, stage) for d in deps]


def declared_outs(stage: str, dvc_file: Path = DVC_YAML) -> list[str]:
    """A stage's outputs of every kind (outs, metrics, plots), as dvc.yaml lists them."""
    entry = dvc_stage(stage, dvc_file)
    outs = [o if isinstance(o, str) else next(iter(o)) for kind in ("outs", "metrics", "plots")
            for o in entry.get(kind, [])]
    return [_resolve(o, stage) for o in outs]


# ---------------------------------------------------------------------------- content keys

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
        if root.is_dir():
            files = sorted(f for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        else:
            files = [root]
        for f in files:
            h.update(str(f.relative_to(root) if root.is_dir() else f).encode())
            if f.is_file():
                with f.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            else:
                h.update(b"<missing>")
    return h.hexdigest()[:32]


def stage_inputs(stage: str, dvc_file: Path = DVC_YAML) -> str:
    """Digest of a stage's deps, as dvc.yaml lists them (code and artifacts), by content.

    Checkpoints and task caches are keyed by it together with the params: otherwise a resumed run
    could continue from weights trained on older data or code, which DVC cannot see because
    checkpoints live outside its outs. Image data is not hashed again: the manifest, a dep of every
    stage that reads images, holds the md5 of every file, so the dataset roots and data/prepared
    are covered by the manifest's own bytes (no stage re-reads gigabytes of images to start).
    """
    deps = declared_deps(stage, dvc_file)
    covered = [d for d in deps if "${" in d or Path(d) == PREPARED]  # ${...}: a dataset root
    if covered and not any(Path(d) == MANIFEST for d in deps) and stage != "prepare_data":
        raise ConfigError(f"{dvc_file}: stage {stage} reads image data but not {MANIFEST}, which vouches for it "
                          "(dvc.yaml is generated: `nightlab dvc-yaml` writes it again)")
    return fingerprint(*(Path(d) for d in deps if d not in covered))


def code_inputs(stage: str, dvc_file: Path = DVC_YAML) -> str:
    """Digest of a stage's code deps alone (its import closure)."""
    return fingerprint(*(Path(d) for d in declared_deps(stage, dvc_file) if d.split("/")[0] in ("nightlab", "flows")))


def key_from_arg(context, parameters) -> str:
    """Prefect cache_key_fn: tasks pass an explicit content digest as their ``key`` argument."""
    return f"{context.task.name}-{parameters['key']}"


def params_of(p, *keys: str) -> dict:
    """The given (declared) params keys as plain JSON, e.g. to store in a checkpoint and detect changes."""
    out = {}
    for key in keys:
        node = p
        for part in key.split("."):  # a mapping (data.sources, baselines) by key, a section by attribute
            node = node[part] if isinstance(getattr(node, "_obj", node), dict) else getattr(node, part)
        out[key] = node.model_dump(mode="json") if hasattr(node, "model_dump") else node
    return json.loads(json.dumps(out, default=str))


# ---------------------------------------------------------------------------- outputs

class StageOutputs:
    """A stage's outputs change together or not at all.

    ``out(path)`` gives a temporary sibling of ``path`` to write to (a directory with
    ``directory=True``); when the ``with`` block ends without an error, every temporary is renamed
    onto its final path, and on any error (a bad file, a full disk, a bug) they are all deleted and
    the previous run's outputs stay as they were. dvc.yaml marks these outs ``persist: true`` so
    that DVC does not delete them before the stage runs either.
    """

    def __init__(self):
        self.pending: dict[Path, Path] = {}
        self.kept: set[Path] = set()  # adopted temporaries that survive an abort (resumable work)

    def __call__(self, path: str | Path, directory: bool = False) -> Path:
        final = Path(path)
        if final in self.pending:
            return self.pending[final]
        final.parent.mkdir(parents=True, exist_ok=True)
        # The suffix stays last: writers pick the format from it (.png, .csv, .parquet).
        tmp = final.with_name(f".{final.stem}.stage-{os.getpid()}-{len(self.pending)}{final.suffix}")
        if tmp.exists():
            _remove(tmp)
        if directory:
            tmp.mkdir()
        self.pending[final] = tmp
        return tmp

    def adopt(self, final: str | Path, tmp: Path, keep_on_abort: bool = True) -> None:
        """A temporary made elsewhere (a resumable work directory) that becomes ``final`` on commit;
        an abort leaves it for the next run to resume from."""
        self.pending[Path(final)] = Path(tmp)
        if keep_on_abort:
            self.kept.add(Path(tmp))

    def __enter__(self) -> StageOutputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        # An OS error (a full disk) names the output, not its temporary.
        name_the_output(exc, {tmp: final for final, tmp in self.pending.items()})
        self.abort()

    def commit(self) -> None:
        missing = [str(f) for f, t in self.pending.items() if not t.exists()]
        if missing:
            self.abort()
            raise RuntimeError(f"stage declared outputs it did not write: {missing}")
        for final, tmp in self.pending.items():
            if tmp.is_dir() and final.exists():
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                os.replace(tmp, final)
                _remove(old)
            else:
                os.replace(tmp, final)
        self.pending.clear()

    def abort(self) -> None:
        for tmp in self.pending.values():
            if tmp not in self.kept:
                _remove(tmp)
        self.pending.clear()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- one run at a time

LOCK_SUFFIX = ".stage-lock"  # ignored by git (.gitignore): some sit beside outputs under reports/


def lock_file(stage: str, dvc_file: Path = DVC_YAML) -> Path | None:
    """Where a stage's lock lives: beside its first output (None for a stage without outputs)."""
    outs = declared_outs(stage, dvc_file)
    return Path(outs[0]).parent / f".{stage}{LOCK_SUFFIX}" if outs else None


@contextlib.contextmanager
def stage_lock(stage: str, dvc_file: Path = DVC_YAML):
    """Hold the stage's lock while it runs. Two runs of one stage with the same params share their work
    directories and temporaries (``.prepared.partial-<digest>``): the second would read the first's
    half-written files and report made-up problems, so it stops at once and says who holds the lock."""
    import fcntl
    import socket
    from datetime import UTC, datetime

    path = lock_file(stage, dvc_file)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "a process that wrote no name"
            raise UserError(f"{path}: another run of stage {stage} holds this lock ({holder}); wait for it to "
                            "end, or stop it, and run again") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                 f"{datetime.now(UTC).isoformat(timespec='seconds')}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- stages

def task_results(futures) -> list:
    """Wait for every task; raise one StageError listing the failed ones' messages (no traceback)."""
    states = [f.wait() or f.state for f in futures]
    failed = [s for s in states if s.is_failed()]
    if any(s.name != USER_ERROR_STATE for s in failed):
        next(f for f in futures if f.state.is_failed() and f.state.name != USER_ERROR_STATE).result()  # a bug
    if failed:
        raise StageError("\n".join(s.message or "task failed" for s in failed))
    return [f.result() for f in futures]


def catch_user_errors(fn, doing: str = ""):
    """Run ``fn``; a user error (nightlab.errors.as_user_error) becomes a Failed state with its message
    (Prefect logs no traceback). ``doing`` names what runs, for the messages."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            user = err if isinstance(err, StageError) else as_user_error(err, doing or fn.__name__)
            if user is None:
                raise
            _leave_no_cache_record()
            return Failed(message=str(user), name=USER_ERROR_STATE)
    return run


def _leave_no_cache_record() -> None:
    """Keep a task's Failed state out of its result cache. Prefect commits whatever a task returns to
    its cache key, a Failed state's data (None) included: every later run with the same key would take
    the task as done with None (a full disk once, then `'NoneType' object is not iterable` forever).
    A raised exception rolls the transaction back, but would log a traceback for a user's mistake."""
    from prefect.context import TaskRunContext
    from prefect.transactions import get_transaction

    txn = get_transaction() if TaskRunContext.get() is not None else None  # a flow keeps no result record
    if txn is not None:
        txn.write_on_commit = False


def stage_flow(name: str, foreach: bool = False):
    """Decorator: a stage flow named like its dvc.yaml stage, reading only the declared params.

    A ``foreach`` stage (``check_source@<key>``) takes the key as its second argument.
    """
    def wrap(fn):
        @functools.wraps(fn)
        def body(p: Params, key: str | None = None):
            stage = f"{name}@{key}" if foreach else name
            view = ParamsView(p, declared_params(stage), stage=stage)
            with stage_lock(stage):
                try:
                    return fn(view, key) if foreach else fn(view)
                finally:
                    _trace_params(stage, view)
        body.foreach = foreach
        return flow(name=name, validate_parameters=False)(catch_user_errors(body, f"stage {name}"))
    return wrap


def _trace_params(stage: str, view: ParamsView) -> None:
    """With NIGHTLAB_PARAMS_TRACE=<file>, record the params keys the stage read (tests compare them with dvc.yaml)."""
    path = os.environ.get("NIGHTLAB_PARAMS_TRACE")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"stage": stage, "read": sorted(view.seen)}) + "\n")


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


@contextlib.contextmanager
def handed_context():
    """A file holding the current Prefect run context, for a process this task starts; removed after."""
    import cloudpickle
    from prefect.context import serialize_context

    # The flow run's context only: with the task's too, the stage's own log lines would be filed
    # under this task instead of the stage's flow run.
    context = {**serialize_context(), "task_run_context": {}}
    fd, path = tempfile.mkstemp(prefix="nightlab-prefect-context-", suffix=".pkl")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(cloudpickle.dumps(context))
        yield Path(path)
    finally:
        Path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def parent_context():
    """Inside the pipeline's run context when a pipeline task started this stage: the stage's flow
    run then shows as a subflow of the pipeline run in the Prefect UI. Run alone, nothing changes."""
    path = os.environ.get(PARENT_CONTEXT_ENV)
    if not path or not Path(path).is_file():
        yield
        return
    import cloudpickle
    from prefect.context import hydrated_context

    with hydrated_context(cloudpickle.loads(Path(path).read_bytes())):
        yield


def stage_main(stage_flow_fn, description: str, argv: list[str] | None = None) -> None:
    """Command-line entry of a stage: ``python -m flows.<stage> [--params params.yaml]``.

    Exits 0 on success, 2 with one ``error:`` block for a mistake the user can fix (bad params or
    data, an operating-system error), and 1 with a traceback for anything else (a bug).
    """
    ap = argparse.ArgumentParser(prog=f"python -m {stage_flow_fn.fn.__module__}", description=description)
    foreach = getattr(stage_flow_fn.fn, "foreach", False)
    if foreach:
        ap.add_argument("key", help="which item of the stage's foreach (e.g. a source's name)")
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
    except ConfigError as err:
        _fail(str(err))
    # Where shards run never changes a result (tests/test_task_runners.py), so it is read here,
    # outside the declared params: DVC need not rerun a stage when it changes.
    try:
        with parent_context():
            run = stage_flow_fn.with_options(task_runner=task_runner(params.orchestration))
            state = run(params, args.key, return_state=True) if foreach else run(params, return_state=True)
    except RuntimeError as err:
        if "ephemeral" not in str(err).lower():
            raise
        _fail(f"{err}\nexport PREFECT_API_URL=http://127.0.0.1:4200/api, then start a Prefect server once "
              "(`prefect server start --port 4200`), or raise "
              "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (a busy machine can be slower than Prefect's limit)")
    if state.is_failed():
        if state.name == USER_ERROR_STATE:
            _fail(state.message or "stage failed")
        state.result()  # a bug: re-raise it with its traceback


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
