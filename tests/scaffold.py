"""Test scaffolding, shared by tests/ and benches/ (as prefect.testing is for Prefect): disposable
project copies with a params profile, a real local Prefect server, a Cityscapes-layout dataset.

Not shipped with the package and not part of any stage; the benchmarks put tests/ on sys.path to
import it (benches/common.py).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from nightlab.config import load_profile
from nightlab.config.writer import params_yaml
from nightlab.distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin: python, dvc, prefect, nightlab
# What a copy must reproduce by itself (and what a run's outputs are).
GENERATED = ("reports/", "benches/RESULTS", "benches/results", "dvc.lock")


def project_files() -> list[str]:
    """The project's tracked and unignored files (what a fresh clone would hold, plus work in progress)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


def write_params(dest: Path, profile: str | Path, changes: dict | None = None) -> None:
    """A complete params.yaml at ``dest``: the defaults, the profile's overrides, then ``changes``
    given as dotted keys ({"hard_classes.threshold": 0.3})."""
    data = load_profile(profile).model_dump(mode="json")
    for key, value in (changes or {}).items():
        *parents, last = key.split(".")
        node = data
        for k in parents:
            node = node[k]
        node[last] = value
    from nightlab.config import parse_params

    dest.write_text(params_yaml(parse_params(data, str(profile)), f"test copy: {profile}"))


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def commit(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-qm", message, "--allow-empty")


def copy_project(dest: Path, profile: str | Path = "profiles/tiny.yaml", changes: dict | None = None) -> Path:
    """The project's files in ``dest`` (a fresh git repo) with ``profile`` as params.yaml; generated
    reports, dvc.lock and benchmark results are left out: the copy makes its own."""
    for rel in project_files():
        if rel.startswith(GENERATED):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    write_params(dest / "params.yaml", ROOT / profile if not Path(profile).is_absolute() else profile, changes)
    git(dest, "init", "-q")
    commit(dest, "copy")
    return dest


def stage_env(api_url: str | None = None, home: str | Path | None = None) -> dict:
    """Environment for stage and DVC commands: this venv first on PATH; a Prefect server at ``api_url``
    (none: each process starts Prefect's temporary server)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for k in ("PREFECT_API_URL", "PREFECT_LOCAL_STORAGE_PATH"):
        env.pop(k, None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if home:
        env["PREFECT_HOME"] = str(home)
    return env


class PrefectServer:
    """``prefect server start`` on a free port with its own PREFECT_HOME; ``stop()`` ends it."""

    def __init__(self, home: str | Path | None = None, timeout_s: float = 180):
        self.home = Path(home or tempfile.mkdtemp(prefix="nightlab-prefect-"))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        self.log = open(self.home / "server.log", "w")  # noqa: SIM115 - open while the server runs
        self.proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                      str(port)], env=stage_env(self.url, self.home), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    log = (self.home / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"prefect server did not start: {log}") from None
                time.sleep(0.5)

    def env(self) -> dict:
        return stage_env(self.url, self.home)

    def stop(self) -> None:
        stop(self.proc)  # the server's own process group (we started it)
        self.log.close()


def stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """End a process started with ``start_new_session`` and its whole group: SIGTERM, then SIGKILL
    after ``grace_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def synthetic_in_layout(kind: str, root: str | Path, split: str, n: int, h: int = 64, w: int = 128,
                        domain: str = "night", seed: int = 0, first: int = 0) -> Path:
    """``n`` synthetic scenes written as a real dataset would be: the Cityscapes layout
    (leftImg8bit/gtFine, labelIds and instanceIds, city folder 'synthcity') or NightCity's
    (images/, label/*_labelIds.png). Returns ``root``."""
    from nightlab.data.synthetic import generate_scene

    root = Path(root)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(first, first + n):
            row = next(r for r in generate_scene(Path(tmp), split, i, seed, h, w) if r["domain"] == domain)
            src = {k: Path(tmp) / row[k] for k in ("image", "label", "instance")}
            if kind == "cityscapes":
                stem = f"synthcity_{i:06d}_000019"
                dest = {"image": f"leftImg8bit/{split}/synthcity/{stem}_leftImg8bit.png",
                        "label": f"gtFine/{split}/synthcity/{stem}_gtFine_labelIds.png",
                        "instance": f"gtFine/{split}/synthcity/{stem}_gtFine_instanceIds.png"}
            elif kind == "nightcity":
                dest = {"image": f"images/{split}/scene_{i:05d}.png",
                        "label": f"label/{split}/scene_{i:05d}_labelIds.png"}
            else:
                raise ValueError(f"no layout writer for {kind!r}: cityscapes or nightcity")
            for key, rel in dest.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src[key], root / rel)
    return root
