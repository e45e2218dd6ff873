"""Inference: two-level (nightlab.predict.TwoLevel, HDM boxes) over image-level alone and over the
image model at full resolution, per image (benches.two_level_timing does the timing); the same at
the other region counts of ``evaluation.ks`` and, with ``--shared-detector``, with a shared-backbone
detector; and PyTorch's CPU runtime settings for both models (benches.runtimes).

All run on the same report-split images of the project that trained the models, side by side (each
round runs the image-level prediction, then the two-level one, on every image); per image the
median over rounds, then the median over images. Models come from ``--models DIR`` (default
the project's models/ when it holds image, region, rdn and hdm), with the project's
reports/hard_classes.json, data/manifest.parquet and params.yaml beside it; otherwise from a
tiny-profile ``dvc repro`` in a temporary copy.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from benches import runtimes
from benches.common import ROOT, figure, tiny_project
from benches.two_level_timing import measure
from flows.paths import HARD_CLASSES, MANIFEST, MODELS, PROJECT_MODELS
from nightlab.config import load_params
from nightlab.data.manifest import Manifest, read_manifest
from nightlab.device import pick_device
from nightlab.models.rdn import load_rdn
from nightlab.predict import TwoLevel
from nightlab.trained import Detector

TARGET = 1.6
FULL_RES_TARGET = 0.7


def trained_project(models: str | Path | None) -> tuple[Path, str]:
    """The project whose models/ to use, and where it came from."""
    d = Path(models) if models else ROOT / MODELS
    proj = d.resolve().parent
    needed = [d / m.name / "model.pt" for m in PROJECT_MODELS] + [proj / HARD_CLASSES, proj / MANIFEST]
    if all(f.is_file() for f in needed):
        return proj, f"models from {d}"
    if models:
        raise FileNotFoundError(f"--models {d}: missing {[str(f) for f in needed if not f.is_file()]}")
    return tiny_project()[0], f"{d} lacks trained models: tiny-profile dvc repro in a temporary copy"


def project_manifest(proj: Path) -> Manifest:
    """The project's manifest, its data roots (relative to the project root, where stages run) made absolute."""
    m = read_manifest(proj / MANIFEST)
    return Manifest(m.df, {src: root if root.is_absolute() else proj / root for src, root in m.root.items()})


def run(quick: bool, models: str | None = None, shared_detector: str | None = None) -> dict:
    """``shared_detector``: a model directory of an RDN/HDM on the image model's backbone (``rdn.backbone:
    shared``, trained on the same image model), timed beside the default detector."""
    proj, source = trained_project(models)
    p = load_params(proj / "params.yaml")
    device = pick_device(p.device)
    sel = project_manifest(proj).select(p.splits.report)
    two = TwoLevel.from_params(p, proj / MODELS, proj / HARD_CLASSES, "hdm", device)
    n, repeat = min(len(sel), 5 if quick else 30), 3 if quick else 5
    others = {}
    for k in p.evaluation.ks:  # the time side of the mIoU-vs-regions curve (reports/merged/k_curve.csv)
        if k != two.selection.max_regions:
            others[f"K{k}"] = TwoLevel(two.models, two.hard, replace(two.selection, max_regions=k), two.detector,
                                       two.batch_size)
    if shared_detector:
        model, cfg = load_rdn(shared_detector, device)
        two.models.detectors["shared"] = Detector(model, cfg["image_scale"])
        others["shared"] = TwoLevel(two.models, two.hard, two.selection, "shared", two.batch_size)
        if not others["shared"].one_pass:
            raise ValueError(f"--shared-detector {shared_detector}: not a shared-backbone detector of "
                             f"{proj}/models/image")
    images = [sel.image(i) for i in range(n)]
    res = measure(two, images, repeat, others=others)
    rt = runtimes.measure(two, images, repeat)
    med, h, w = res["median_s"], *sel.image(0).shape[:2]
    backbone = "shared with the image model (one pass)" if two.one_pass else "its own"
    return {
        "title": "Two-level vs image-level inference",
        "setup": f"{source}; {n} {', '.join(map(str, p.splits.report))} images of {h}x{w} on {device}, "
                 f"{len(two.hard)} hard classes, detector backbone {backbone}, "
                 f"{res['regions_per_image']:.1f} regions/image (merge.score_thresh "
                 f"{two.selection.score_thresh}, max_regions {two.selection.max_regions}); full resolution = the "
                 "image model at scale 1.0; "
                 f"runtime settings: forward passes of the image model and of the region model on "
                 f"{rt['region_views']:.1f} views/image, {rt['threads']} threads unless stated",
        "repeat": repeat,
        "figures": [
            figure("two-level / image-level time per image", res["two_level_over_image"], "x", f"<= {TARGET}",
                   res["two_level_over_image"] <= TARGET),
            figure("two-level / full-resolution image model", res["two_level_over_full_res"], "x",
                   f"<= {FULL_RES_TARGET}", res["two_level_over_full_res"] <= FULL_RES_TARGET),
            figure("image-level per image", med["image"] * 1e3, "ms"),
            figure("two-level per image", med["two_level"] * 1e3, "ms"),
            figure("  of which image model + detector (first level)", med["part.first_level"] * 1e3, "ms"),
            figure("  of which region model + merge", med["part.regions"] * 1e3, "ms"),
            figure("detector in a backbone pass of its own", med["part.detector_own_pass"] * 1e3, "ms"),
            figure("full-resolution image model per image", med["full_res"] * 1e3, "ms"),
            figure("regions per image", res["regions_per_image"]),
            *[figure(f"two-level at K={k} regions / {base}", res[f"two_level.K{k}_over_{key}"], "x")
              for k in p.evaluation.ks if k != two.selection.max_regions
              for base, key in (("image-level", "image"), ("full-resolution image model", "full_res"))],
            *([figure("two-level with the shared-backbone detector / image-level", res["two_level.shared_over_image"],
                      "x", f"<= {TARGET}", res["two_level.shared_over_image"] <= TARGET),
               figure("two-level with the shared-backbone detector / full-resolution image model",
                      res["two_level.shared_over_full_res"], "x", f"<= {FULL_RES_TARGET}",
                      res["two_level.shared_over_full_res"] <= FULL_RES_TARGET),
               figure("two-level with the shared-backbone detector per image", med["two_level.shared"] * 1e3, "ms")]
              if shared_detector else []),
            *[figure(f"{part} model forward, eager, per image", rt["median_s"][f"{part}.eager"] * 1e3, "ms")
              for part in ("image", "region")],
            *[figure(f"{part} model forward, {s} / eager", rt["ratio"][f"{part}.{s}"], "x")
              for part in ("image", "region") for s in runtimes.SETTINGS[1:]],
        ],
        "raw": {**res["per_image_s"], "project": str(proj), "runtimes": rt},
    }
