"""Evaluator: nightlab.metrics.Evaluator vs cityscapesscripts on the same maps (bench_evaluator.run)."""
from __future__ import annotations

from benches.bench_evaluator import run as run_evaluator
from benches.common import figure

TARGET = 10.0


def run(quick: bool) -> dict:
    images, repeat = (4, 3) if quick else (20, 5)
    h, w = 512, 1024
    r = run_evaluator(images=images, repeat=repeat, height=h, width=w)
    return {
        "title": "Evaluator vs cityscapesscripts",
        "setup": f"{images} images of {h}x{w}, torch threads {r['torch_threads']}, cityscapesscripts "
                 f"cython {r['cityscapes_cython']}; both evaluated side by side in each round",
        "repeat": repeat,
        "figures": [
            figure("speed-up, in-memory (how the pipeline calls it)", r["speedup"], "x", f">= {TARGET:g}x",
                   r["speedup"] >= TARGET),
            figure("speed-up, from the same PNG files", r["speedup_from_png"], "x"),
            figure("cityscapesscripts time", r["cityscapes_s"], "s"),
            figure("Evaluator time (in-memory)", r["ours_s"], "s"),
            figure("identical numbers (IoU and mIoU within 1e-6)", r["identical_1e-6"], "", "identical",
                   r["identical_1e-6"]),
            figure("max abs IoU difference", r["max_abs_iou_diff"]),
        ],
        "raw": r,
    }
