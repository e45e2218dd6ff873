"""What the benchmarks share: timing, project copies, a Prefect server, figures, machine facts."""
from __future__ import annotations

import atexit
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test scaffolding lives with the tests
from scaffold import BIN, ROOT, PrefectServer, commit, copy_project, git, stage_env, write_params  # noqa: E402

__all__ = ["BIN", "ROOT", "PrefectServer", "commit", "copy_project", "git", "stage_env", "write_params"]


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


# ---- project copies, the Prefect server: tests/scaffold.py (shared with the tests) ----------

def temp_dir(name: str) -> Path:
    """A temporary directory removed when the runner exits."""
    path = Path(tempfile.mkdtemp(prefix=f"nightlab-bench-{name}-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def sh(cmd: list[str], cwd: Path, env: dict, timeout: float = 3600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}) in {cwd}:\n"
                           f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


_server: PrefectServer | None = None
_tiny: tuple[Path, float] | None = None


def prefect_server() -> PrefectServer:
    """One Prefect server per runner, stopped at exit."""
    global _server
    if _server is None:
        _server = PrefectServer(home=temp_dir("prefect-home"))
        atexit.register(_server.stop)
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
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kb = next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal"))
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        ram = "unknown"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available on this machine"
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "ram": ram,
            "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
