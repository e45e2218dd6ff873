"""Generation: synthetic images/s at 256x512 on one core (generate_scene writes day + night).

Runs in a child process pinned to one CPU with every thread pool at 1 thread (OMP/MKL/OpenBLAS
through the environment before numpy loads, OpenCV and torch through their calls), so the figure
is per core whatever the machine. The time includes writing the PNGs (image, labelIds, instanceIds).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benches.common import ROOT, figure

TARGET = 20.0
H, W = 256, 512
ONE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"), "1")


def run(quick: bool) -> dict:
    scenes, repeat = (6, 3) if quick else (25, 5)
    out = subprocess.run([sys.executable, "-m", "benches.generation", str(scenes), str(repeat)], cwd=ROOT,
                         env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    rate = statistics.median(r["images_per_s"])
    return {
        "title": "Synthetic generation (one core)",
        "setup": f"{scenes} scenes ({r['images_per_repeat']} images) of {H}x{W} per round, pinned to CPU "
                 f"{r['cpu']}, 1 thread, PNG writing included, after one warm-up scene",
        "repeat": repeat,
        "figures": [figure("images/s on one core", rate, "images/s", f">= {TARGET:g}", rate >= TARGET),
                    figure("seconds per scene (day + night)", 2 / rate, "s")],
        "raw": r,
    }


def _child(scenes: int, repeat: int) -> dict:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from nightlab.data.synthetic import generate_scene

    rates, n = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        generate_scene(Path(tmp), "train", 10_000, 0, H, W)  # warm-up: imports, caches
        for _ in range(repeat):
            t0 = time.perf_counter()
            n = sum(len(generate_scene(Path(tmp), "train", i, 0, H, W)) for i in range(scenes))
            rates.append(n / (time.perf_counter() - t0))
    return {"cpu": cpu, "images_per_repeat": n, "images_per_s": rates}


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]), int(sys.argv[2]))))
