"""Region selectors: which boxes of an image the region model gets, ranked, so that any budget of K
regions per image is the top K (docs/design.md 1.8).

* a detector (the RDN, or HDM): its proposals after NMS, by objectness;
* ground-truth boxes (the bound of the region step): the hard-class context boxes, smallest
  object first (the smaller the object, the more a zoom helps);
* uncertainty, training-free: boxes around the connected regions where the image model's
  prediction has high entropy, by entropy mass — the selector of dense+sparse refinement
  (SparseRefine, ECCV 2024), which no NightLab implementation has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch
from torchvision.ops import nms

from nightlab.boxes import expand_boxes


def top_k(boxes, scores, k: int, nms_thresh: float = 0.5, score_thresh: float = 0.0) -> np.ndarray:
    """The ``k`` highest-scoring boxes after NMS (and above ``score_thresh``): (<=k, 4) float64."""
    return top_k_scored(boxes, scores, k, nms_thresh, score_thresh)[0]


def top_k_scored(boxes, scores, k: int, nms_thresh: float = 0.5, score_thresh: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` with the boxes' scores: ((<=k, 4), (<=k,)) float64."""
    b = torch.tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    s = torch.tensor(np.asarray(scores, dtype=np.float64).reshape(-1))
    keep = s >= score_thresh
    b, s = b[keep], s[keep]
    if len(b) == 0 or k <= 0:
        return np.zeros((0, 4)), np.zeros(0)
    picked = nms(b, s, nms_thresh)[:k]
    return b[picked].numpy(), s[picked].numpy()


@dataclass(frozen=True)
class RegionSelection:
    """Which of a selector's ranked boxes the region model gets: those scoring at least ``score_thresh``
    (detectors' objectness only), after NMS at ``nms_thresh``, the top ``max_regions`` (supplement B,
    docs/design.md 1.7). Built from ``merge`` (a MergeConfig) by :meth:`of`; two-level prediction, the
    evaluation and the benchmarks select with the same object, so they zoom into the same regions."""
    max_regions: int
    nms_thresh: float
    score_thresh: float

    @classmethod
    def of(cls, merge) -> RegionSelection:
        return cls(merge.max_regions, merge.nms_thresh, merge.score_thresh)

    def top(self, boxes, scores, k: int | None = None, objectness: bool = True) -> np.ndarray:
        """The top ``k`` (default ``max_regions``) boxes; ``objectness``: ``scores`` are a detector's, so the
        score threshold applies (a training-free selector's scores are on another scale). A budget's top k
        is a prefix of a larger budget's."""
        return self.top_scored(boxes, scores, k, objectness)[0]

    def top_scored(self, boxes, scores, k: int | None = None, objectness: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top` with the boxes' scores."""
        k = self.max_regions if k is None else k
        return top_k_scored(boxes, scores, k, self.nms_thresh, self.score_thresh if objectness else 0.0)


def ground_truth(gt: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Hard-class context boxes of one image (x0..y1, area), ranked smallest object first; the
    scores (n, n-1, ..., 1) fall with the rank and stay positive, so :func:`top_k` keeps the order."""
    order = gt.sort_values(["area", "x0", "y0"], kind="stable")
    boxes = order[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    return boxes, np.arange(len(boxes), 0, -1, dtype=np.float64)


def entropy_map(probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy of the class distribution, divided by log(C): (H, W) in [0, 1]."""
    p = probs.float().clamp_min(1e-12)
    return -(p * p.log()).sum(0) / math.log(probs.shape[0])


def uncertain_regions(probs: torch.Tensor, threshold: float, boxes_cfg, stride: int = 2
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes around the connected regions where the normalised entropy exceeds ``threshold``.

    Components are found at 1/``stride`` resolution (speed), dropped below ``boxes_cfg.min_area`` and
    grown like the ground-truth boxes (``boxes_cfg``, a BoxesConfig: context, min_size), and scored by
    their entropy mass (the sum of entropy inside), so that large and very uncertain regions come first.
    """
    context, min_size, min_area = boxes_cfg.context, boxes_cfg.min_size, boxes_cfg.min_area
    ent = entropy_map(probs).cpu().numpy()
    h, w = ent.shape
    small = ent[::stride, ::stride]
    mask = (small > threshold).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.zeros((0, 4)), np.zeros(0)
    mass = np.bincount(comp.ravel(), weights=small.ravel(), minlength=n)[1:] * stride * stride
    keep = stats[1:, cv2.CC_STAT_AREA] * stride * stride >= min_area
    tight = np.stack([stats[1:, 0], stats[1:, 1], stats[1:, 0] + stats[1:, 2], stats[1:, 1] + stats[1:, 3]], 1)
    tight = tight[keep] * stride
    boxes = expand_boxes(tight.astype(np.float64), context, min_size, h, w)
    return boxes, mass[keep]
