"""What the benchmarks share: timing, project copies, a Prefect server, figures, machine facts."""
from __future__ import annotations

import atexit
import datetime
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin: python, dvc, prefect


# ---- timing and figures ---------------------------------------------------------------------

def median_times(fns: dict, repeat: int) -> dict[str, float]:
    """Median seconds per fn over ``repeat`` rounds; each round runs every fn once (side by side)."""
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def figure(name: str, value, unit: str = "", target: str | None = None, met: bool | None = None,
           summary: bool = True) -> dict:
    """One row of a benchmark's table; ``target`` is text (">= 10x"), ``met`` None when no target;
    figures with a target go to the summary table too unless ``summary`` is false."""
    return {"figure": name, "value": value, "unit": unit, "target": target, "met": met, "summary": summary}


# ---- project copies, stage environment -------------------------------------------------------

def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


def copy_project(dest: Path, profile: str = "profiles/tiny.yaml") -> Path:
    """The project's tracked and unignored files in ``dest`` (a fresh git repo), ``profile`` as params.yaml.

    Like tests/conftest.py: reports/, dvc.lock and bench results are left out, the copy makes its own."""
    for rel in project_files():
        if rel.startswith(("reports/", "benches/RESULTS", "benches/results")) or rel == "dvc.lock":
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    write_params(dest / "params.yaml", ROOT / profile)
    git(dest, "init", "-q")
    commit(dest, "copy")
    return dest


def write_params(dest: Path, profile: Path, changes: dict | None = None) -> None:
    """``profile`` completed with every default (DVC looks each stage's params up by key, and a
    profile may leave whole sections to their defaults), with ``changes`` ("a.b": value) applied."""
    import yaml

    from nightlab.config import load_params

    data = load_params(profile).model_dump(mode="json")
    for key, value in (changes or {}).items():
        *parents, last = key.split(".")
        node = data
        for k in parents:
            node = node[k]
        node[last] = value
    dest.write_text(yaml.safe_dump(data, sort_keys=False))


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def commit(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", message, "--allow-empty")


def temp_dir(name: str) -> Path:
    """A temporary directory removed when the runner exits."""
    path = Path(tempfile.mkdtemp(prefix=f"nightlab-bench-{name}-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def stage_env(api_url: str | None, home: Path | None = None) -> dict:
    """Environment for stage commands: the venv first on PATH; a Prefect server at ``api_url``,
    or none (each stage then starts Prefect's temporary server)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for k in ("PREFECT_API_URL", "PREFECT_LOCAL_STORAGE_PATH"):
        env.pop(k, None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if home:
        env["PREFECT_HOME"] = str(home)
    return env


def sh(cmd: list[str], cwd: Path, env: dict, timeout: float = 3600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}) in {cwd}:\n"
                           f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


# ---- a Prefect server, started once per runner -----------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectServer:
    """``prefect server start`` on a free port with its own PREFECT_HOME; stopped at exit."""

    def __init__(self):
        self.home = temp_dir("prefect-home")
        self.url = f"http://127.0.0.1:{free_port()}/api"
        port = self.url.split(":")[-1].split("/")[0]
        env = stage_env(None, self.home)
        self.log = open(self.home / "server.log", "w")
        self.proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"prefect server did not start: {(self.home / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)

    def env(self) -> dict:
        return stage_env(self.url, self.home)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own process group (we started it)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


_server: PrefectServer | None = None
_tiny: tuple[Path, float] | None = None


def prefect_server() -> PrefectServer:
    global _server
    if _server is None:
        _server = PrefectServer()
    return _server


def tiny_project() -> tuple[Path, float]:
    """A tiny-profile project copy after one ``dvc repro`` (against the shared Prefect server),
    built once per runner and shared by the benchmarks that need trained models; returns
    (project, seconds the full repro took)."""
    global _tiny
    if _tiny is None:
        proj = copy_project(temp_dir("tiny") / "proj")
        seconds = timed(lambda: sh(["dvc", "repro"], proj, prefect_server().env()))
        commit(proj, "run")
        _tiny = (proj, seconds)
    return _tiny


# ---- the machine -----------------------------------------------------------------------------

def machine() -> dict:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        ram = "unknown"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available on this machine"
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "ram": ram,
            "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
