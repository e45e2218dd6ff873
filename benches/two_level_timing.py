"""Time per image of the three ways to segment a frame, side by side on the same images:

* ``image``: the image model at its ``image_scale`` (the first level alone);
* ``two_level``: NightLab, the image model, the HDM detector, the region model on the top
  ``merge.max_regions`` regions and the merge (``nightlab.predict.TwoLevel``), with its parts
  timed on their own: ``first_level`` (image model and detector, one backbone pass when the detector
  shares the image model's, ``rdn.backbone: shared``), ``regions`` (region model + merge), and the
  detector in a pass of its own;
* ``full_res``: the same image model architecture at scale 1.0, the baseline a user would pick
  instead of a second level (its cost does not depend on its weights: the network is fully
  convolutional, so the default model's weights time it).

Each round runs every variant on every image in turn; per image the median over rounds, then the
median over images; ratios are of those medians. Imports only nightlab and torch (no DVC, no
Prefect), so it also runs on a bare GPU machine:

    python -m benches.two_level_timing --models models --images 'data/prepared/leftImg8bit/test/night/*.png' \
        --device cuda --amp --out timing.json

``--amp`` runs under bf16 autocast (CUDA); ``--threads N`` sets torch's intra-op threads (CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from nightlab.config import load_params
from nightlab.inference import class_map, image_probs
from nightlab.io import read_image
from nightlab.predict import TwoLevel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def measure(two: TwoLevel, images: list[np.ndarray], repeat: int, amp: bool = False,
            others: dict[str, TwoLevel] | None = None) -> dict:
    """Median seconds per image of every variant and part, and the regions per image. ``others``: more
    two-level models (e.g. with another detector) timed in the same rounds as ``two_level.<name>``."""
    m = two.models
    device = m.device
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    state: dict = {}

    def image_level(img, scale):
        return class_map(image_probs(m.image, img, scale, device, m.window)).byte().cpu()

    def first_level(img):
        state["first"] = two.first_level(img)

    def regions(img):
        two.second_level(img, state["first"]).byte().cpu()

    variants = {
        "image": lambda img: image_level(img, m.image_scale),
        "two_level": lambda img: two(img),
        "full_res": lambda img: image_level(img, 1.0),
        "part.detector_own_pass": lambda img: m.propose(two.detector, [img]),
        **{f"two_level.{name}": other for name, other in (others or {}).items()},
    }
    times = {k: np.zeros((repeat, len(images))) for k in [*variants, "part.first_level", "part.regions"]}
    with torch.inference_mode(), ctx():
        for img in images[:2]:  # warm-up: allocator, cuDNN autotuning, lazy imports
            for fn in variants.values():
                fn(img)
        for r in range(repeat):
            for i, img in enumerate(images):
                for name, fn in variants.items():
                    times[name][r, i] = _timed(lambda fn=fn, img=img: fn(img), device)
                times["part.first_level"][r, i] = _timed(lambda img=img: first_level(img), device)
                times["part.regions"][r, i] = _timed(lambda img=img: regions(img), device)
        n_regions = statistics.mean(len(two.first_level(img).boxes) for img in images)
    per_image = {k: np.median(v, 0) for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in per_image.items()}
    return {"median_s": med, "per_image_s": {k: v.tolist() for k, v in per_image.items()},
            "two_level_over_image": med["two_level"] / med["image"],
            "two_level_over_full_res": med["two_level"] / med["full_res"],
            **{f"two_level.{name}_over_{base}": med[f"two_level.{name}"] / med[base] for name in others or {}
               for base in ("image", "full_res")},
            "regions_per_image": n_regions, "one_backbone_pass": two.one_pass, "images": len(images),
            "repeat": repeat}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--hard", default="reports/hard_classes.json")
    ap.add_argument("--params", default="params.yaml", help="merge settings and image_model.window")
    ap.add_argument("--images", required=True, help="a quoted glob of png/jpg frames")
    ap.add_argument("--n", type=int, default=20, help="images (the first n, sorted)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    p = load_params(a.params)
    files = sorted(glob.glob(a.images))[: a.n]
    if not files:
        raise SystemExit(f"error: --images {a.images!r} matches no file")
    two = TwoLevel.from_params(p, a.models, a.hard, "hdm", a.device)
    res = measure(two, [read_image(f) for f in files], a.repeat, a.amp)
    res.update(device=str(torch.cuda.get_device_name(0) if two.models.device.type == "cuda" else "cpu"),
               amp=a.amp, threads=torch.get_num_threads(), torch=torch.__version__,
               size=list(read_image(files[0]).shape[:2]))
    text = json.dumps(res, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "per_image_s"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
