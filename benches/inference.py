"""Inference: two-level (nightlab.predict.TwoLevel, HDM boxes) over image-level alone, per image.

Both run on the same val images of the project that trained the models, side by side (each
round runs the image-level prediction, then the two-level one, on every image); per image the
median over rounds, then the median over images. Models come from ``--models DIR`` (default
the project's models/ when it holds image, region, rdn and hdm), with the project's
reports/hard_classes.json, data/manifest.parquet and params.yaml beside it; otherwise from a
tiny-profile ``dvc repro`` in a temporary copy.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from benches.common import ROOT, figure, timed, tiny_project
from nightlab.config import load_params
from nightlab.data.manifest import Manifest, read_manifest
from nightlab.device import pick_device
from nightlab.inference import image_probs
from nightlab.predict import TwoLevel

TARGET = 1.6
PARTS = ("image", "region", "rdn", "hdm")


def trained_project(models: str | Path | None) -> tuple[Path, str]:
    """The project whose models/ to use, and where it came from."""
    d = Path(models) if models else ROOT / "models"
    proj = d.resolve().parent
    needed = [d / p / "model.pt" for p in PARTS] + [proj / "reports/hard_classes.json", proj / "data/manifest.parquet"]
    if all(f.is_file() for f in needed):
        return proj, f"models from {d}"
    if models:
        raise FileNotFoundError(f"--models {d}: missing {[str(f) for f in needed if not f.is_file()]}")
    return tiny_project()[0], f"{d} lacks trained models: tiny-profile dvc repro in a temporary copy"


def project_manifest(proj: Path) -> Manifest:
    """The project's manifest, its data roots (relative to the project root, where stages run) made absolute."""
    m = read_manifest(proj / "data/manifest.parquet")
    return Manifest(m.df, {src: root if root.is_absolute() else proj / root for src, root in m.root.items()})


def run(quick: bool, models: str | None = None) -> dict:
    proj, source = trained_project(models)
    p = load_params(proj / "params.yaml")
    device = pick_device(p.device)
    sel = project_manifest(proj).select(p.splits.report)
    two = TwoLevel.from_params(p.merge, "hdm", models=proj / "models", hard=proj / "reports/hard_classes.json",
                               device=device)
    n, repeat = min(len(sel), 5 if quick else 50), 3 if quick else 5
    images = [sel.image(i) for i in range(n)]

    def image_level(img):
        return image_probs(two.image_model, img, two.image_scale, device).argmax(0).byte().cpu().numpy()

    image_level(images[0]), two(images[0])  # warm-up
    t_img, t_two = np.zeros((repeat, n)), np.zeros((repeat, n))
    for r in range(repeat):
        for i, img in enumerate(images):
            t_img[r, i] = timed(lambda img=img: image_level(img))
            t_two[r, i] = timed(lambda img=img: two(img))
    per_img, per_two = np.median(t_img, 0), np.median(t_two, 0)
    ratio = float(np.median(per_two) / np.median(per_img))
    regions = statistics.mean(len(two.regions(img)) for img in images)
    h, w = images[0].shape[:2]
    return {
        "title": "Two-level vs image-level inference",
        "setup": f"{source}; {n} {', '.join(map(str, p.splits.report))} images of {h}x{w} on {device}, "
                 f"{len(two.hard)} hard classes, {regions:.1f} regions/image (merge.score_thresh "
                 f"{two.score_thresh}, max_regions {two.max_regions})",
        "repeat": repeat,
        "figures": [
            figure("two-level / image-level time per image", ratio, "x", f"<= {TARGET}", ratio <= TARGET),
            figure("median of per-image ratios", float(np.median(per_two / per_img)), "x"),
            figure("image-level per image", float(np.median(per_img)) * 1e3, "ms"),
            figure("two-level per image", float(np.median(per_two)) * 1e3, "ms"),
            figure("regions per image", regions),
        ],
        "raw": {"image_s": per_img.tolist(), "two_level_s": per_two.tolist(), "project": str(proj)},
    }
