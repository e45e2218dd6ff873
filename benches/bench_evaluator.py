"""Time nightlab.metrics.Evaluator against cityscapesscripts' pixel-level evaluation, side by side.

    python benches/bench_evaluator.py --images 20 --repeat 5 --json out.json

Both evaluate the same random blocky predictions (trainIds) against the same random labelId
ground truth (all 34 labelIds, so cityscapes' ignored ones occur) at 512x1024. cityscapesscripts
only reads PNG files, so its time includes decoding them; ours is timed twice: on in-memory
tensors (how the pipeline calls it, straight on model output) and from the same PNG files
(decode + labelId->trainId LUT + update), the like-for-like comparison.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nightlab.labels import CLASS_NAMES, ID_TO_TRAINID, NUM_CLASSES, TRAINID_TO_ID
from nightlab.metrics import Evaluator

HEIGHT, WIDTH = 512, 1024


def _median_times(fns: dict, repeat: int) -> tuple[dict, dict]:
    """Median seconds per fn; rounds interleave the fns so machine drift hits all of them alike."""
    times, outs = {k: [] for k in fns}, {}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def run(images: int = 20, repeat: int = 5, height: int = HEIGHT, width: int = WIDTH, threads: int = 1) -> dict:
    """threads: torch intra-op threads while timing (restored after). 1 by default because
    cityscapesscripts is single-threaded numpy, and on small shared VMs torch's second thread
    can stall for whole scheduler ticks, which would measure the VM rather than the code."""
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(images, repeat, height, width)
    finally:
        torch.set_num_threads(prev_threads)


def _run(images: int, repeat: int, height: int, width: int) -> dict:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    # Blocky maps (16x16 px cells) rather than per-pixel noise: PNG decoding of pure noise would
    # dominate both file-based timings and says little about real label maps.
    rng = np.random.default_rng(0)
    cells = (height // 16, width // 16)
    up = lambda a: np.ascontiguousarray(a.repeat(16, 0).repeat(16, 1))  # noqa: E731
    gts, preds = [], []
    for _ in range(images):
        gt = rng.integers(0, 34, cells, dtype=np.uint8)  # labelIds, ignored ones included
        pred = ID_TO_TRAINID[gt]  # a prediction right on ~70% of cells, random elsewhere
        wrong = (pred == 255) | (rng.random(cells) < 0.3)
        pred[wrong] = rng.integers(0, NUM_CLASSES, int(wrong.sum()), dtype=np.uint8)
        gts.append(up(gt))
        preds.append(up(pred))
    gt_t = [torch.from_numpy(ID_TO_TRAINID[g]) for g in gts]
    pred_t = [torch.from_numpy(p) for p in preds]

    args = copy.copy(cs.args)
    args.evalInstLevelScore = False  # nIoU needs instanceIds PNGs; plain IoU is what we compare
    args.JSONOutput, args.quiet = False, True

    with tempfile.TemporaryDirectory() as tmp:
        pred_files = [f"{tmp}/pred_{i}.png" for i in range(images)]
        gt_files = [f"{tmp}/gt_{i}_labelIds.png" for i in range(images)]
        for p, g, pf, gf in zip(preds, gts, pred_files, gt_files):  # untimed set-up
            Image.fromarray(TRAINID_TO_ID[p]).save(pf)
            Image.fromarray(g).save(gf)

        def ours():
            ev = Evaluator()
            for p, g in zip(pred_t, gt_t):
                ev.update(p, g)
            return ev.result()

        def ours_from_png():
            ev = Evaluator()
            for pf, gf in zip(pred_files, gt_files):
                p = torch.from_numpy(ID_TO_TRAINID[np.asarray(Image.open(pf))])  # labelId -> trainId
                ev.update(p, torch.from_numpy(ID_TO_TRAINID[np.asarray(Image.open(gf))]))
            return ev.result()

        secs, outs = _median_times({"cs": lambda: cs.evaluateImgLists(pred_files, gt_files, args),
                                    "ours": ours, "ours_png": ours_from_png}, repeat)
    cs_s, ours_s, ours_png_s = secs["cs"], secs["ours"], secs["ours_png"]
    ref, res, res_png = outs["cs"], outs["ours"], outs["ours_png"]

    ref_iou = np.array([ref["classScores"][n] for n in CLASS_NAMES])
    diffs = [np.abs(np.asarray(r["iou"]) - ref_iou) for r in (res, res_png)]
    identical = all(
        np.array_equal(np.isnan(r["iou"]), np.isnan(ref_iou)) and np.nanmax(d, initial=0.0) <= 1e-6
        and abs(r["mIoU"] - ref["averageScoreClasses"]) <= 1e-6
        for r, d in zip((res, res_png), diffs))
    return {
        "images": images, "repeat": repeat, "height": height, "width": width,
        "torch_threads": torch.get_num_threads(), "cityscapes_cython": bool(cs.CSUPPORT),
        "cityscapes_s": cs_s, "ours_s": ours_s, "ours_from_png_s": ours_png_s,
        "speedup": cs_s / ours_s, "speedup_from_png": cs_s / ours_png_s,
        "identical_1e-6": bool(identical),
        "max_abs_iou_diff": float(max(np.nanmax(d, initial=0.0) for d in diffs)),
        "mIoU": res["mIoU"], "cityscapes_mIoU": ref["averageScoreClasses"],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, like cityscapes)")
    ap.add_argument("--json", type=Path, help="write the result dict here")
    a = ap.parse_args(argv)
    r = run(a.images, a.repeat, threads=a.threads)
    print(f"{r['images']} images of {r['height']}x{r['width']}, median of {r['repeat']} "
          f"(torch threads {r['torch_threads']}, cityscapes cython {r['cityscapes_cython']})")
    print(f"  cityscapesscripts (from PNG) : {r['cityscapes_s']:.4f} s")
    print(f"  Evaluator (in-memory)        : {r['ours_s']:.4f} s   speed-up {r['speedup']:.1f}x")
    print(f"  Evaluator (from PNG)         : {r['ours_from_png_s']:.4f} s   speed-up {r['speedup_from_png']:.1f}x")
    print(f"  identical to 1e-6: {r['identical_1e-6']} (max |dIoU| {r['max_abs_iou_diff']:.2e}, "
          f"mIoU {r['mIoU']:.6f} vs {r['cityscapes_mIoU']:.6f})")
    if a.json:
        a.json.write_text(json.dumps(r, indent=2) + "\n")
    return r


if __name__ == "__main__":
    main()
