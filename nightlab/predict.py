"""The full two-level model for inference: image model, HDM (or RDN) boxes, region model, merge."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nightlab.hard import read_hard_classes
from nightlab.inference import image_probs, propose, region_probs
from nightlab.merge import merge, select_regions
from nightlab.models.rdn import load_rdn
from nightlab.models.store import load_seg_model


@dataclass
class Prediction:
    image: np.ndarray  # (H, W) uint8 trainIds, image level
    merged: np.ndarray  # (H, W) uint8 trainIds, two-level
    boxes: np.ndarray  # (R, 4) regions used, native pixels


class TwoLevel:
    def __init__(self, models: str | Path = "models", hard: str | Path = "reports/hard_classes.json",
                 detector: str = "hdm", device="cpu", score_thresh=0.5, nms_thresh=0.5, max_regions=20,
                 batch_size=32):
        models = Path(models)
        self.device = torch.device(device)
        self.image_model, icfg = load_seg_model(models / "image", self.device)
        self.region_model, rcfg = load_seg_model(models / "region", self.device)
        self.detector, dcfg = load_rdn(models / detector, self.device)
        self.image_scale, self.region_size = icfg["image_scale"], rcfg["region_size"]
        self.det_scale = dcfg["image_scale"]
        self.hard = read_hard_classes(hard)
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.max_regions, self.batch_size = max_regions, batch_size

    @classmethod
    def from_params(cls, merge, detector: str = "hdm", models="models", hard="reports/hard_classes.json",
                    device="cpu") -> TwoLevel:
        """With the merge settings of a MergeConfig (``params.merge``)."""
        return cls(models, hard, detector, device, merge.score_thresh, merge.nms_thresh, merge.max_regions,
                   merge.batch_size)

    def regions(self, image: np.ndarray) -> np.ndarray:
        if not self.hard or self.max_regions == 0:
            return np.zeros((0, 4))
        (boxes, scores), = propose(self.detector, [image], self.det_scale, self.device)
        return select_regions(boxes, scores, self.score_thresh, self.nms_thresh, self.max_regions)

    def merge_with(self, image: np.ndarray, probs: torch.Tensor, boxes) -> torch.Tensor:
        pred = probs.argmax(0)
        if len(boxes) == 0 or not self.hard:
            return pred
        rp = region_probs(self.region_model, image, boxes, self.region_size, self.device, self.batch_size)
        return merge(pred, zip(boxes, rp), self.hard)[0]

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> Prediction:
        probs = image_probs(self.image_model, image, self.image_scale, self.device)
        boxes = self.regions(image)
        merged = self.merge_with(image, probs, boxes)
        return Prediction(probs.argmax(0).byte().cpu().numpy(), merged.byte().cpu().numpy(), boxes)


def predict_files(paths, out_dir: str | Path, two_level: TwoLevel, log=print) -> list[tuple[str, str]]:
    """Two-level prediction for each image file: ``<stem>_trainIds.png``, ``_color.png``, ``_overlay.png``.

    An unreadable file is reported and skipped; returns the (path, problem) failures.
    """
    from nightlab.io import DataError, read_image, write_image, write_label
    from nightlab.labels import colorize
    from nightlab.viz import draw_boxes, overlay

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in paths:
        try:
            image = read_image(path)
        except DataError as err:
            failures.append((str(path), str(err)))
            log(f"skipped: {err}")
            continue
        pred = two_level(image)
        stem = Path(path).stem
        write_label(out_dir / f"{stem}_trainIds.png", pred.merged)
        write_image(out_dir / f"{stem}_color.png", colorize(pred.merged))
        write_image(out_dir / f"{stem}_overlay.png", draw_boxes(overlay(image, pred.merged), pred.boxes))
        log(f"{path}: {len(pred.boxes)} regions -> {out_dir / stem}_*.png")
    return failures
