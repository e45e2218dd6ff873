"""Differences measured beyond noise: paired per-image bootstrap over confusion matrices.

An mIoU is not a mean over images, so its sampling error is estimated by resampling images: draw
N of the N report images with replacement, sum their confusion matrices for each variant,
recompute the mIoU of each, and take the difference. Both variants use the same draw (paired),
so what the images have in common cancels. The 95% interval is the 2.5th-97.5th percentile over
the resamples. It covers the sampling of test images, not training noise (a retrained model is
another draw; tests/seed studies cover that, docs/design.md 1.8).

Integer arithmetic throughout (resample counts times confusion counts), so the same seed gives
the same interval on any machine.
"""
from __future__ import annotations

import numpy as np

from nightlab.metrics import iou_from_confusion, miou


def resample_counts(n_images: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n_images) int64: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(samples, n_images))
    counts = np.zeros((samples, n_images), np.int64)
    np.add.at(counts, (np.arange(samples)[:, None], draws), 1)
    return counts


def _resampled_totals(per_image: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, C, C) int64: each resample's summed confusion matrix."""
    n, c, _ = per_image.shape
    return np.einsum("bn,nk->bk", counts, per_image.reshape(n, c * c).astype(np.int64)).reshape(-1, c, c)


def _class_ious(totals: np.ndarray) -> np.ndarray:
    """(B, C) per-class IoU of each of ``totals`` (B, C, C); NaN where the class is in neither."""
    tp = np.diagonal(totals, axis1=1, axis2=2).astype(np.float64)
    denom = totals.sum(1) + totals.sum(2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def resampled_mious(per_image: np.ndarray, counts: np.ndarray, class_ids=None) -> np.ndarray:
    """mIoU of each resample: ``per_image`` (N, C, C) confusion counts, ``counts`` (B, N)."""
    total = _resampled_totals(per_image, counts)
    out = np.empty(len(total))
    for b, cm in enumerate(total):
        iou = iou_from_confusion(cm)
        out[b] = miou(iou if class_ids is None else iou[list(class_ids)])
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, samples: int = 1000, seed: int = 0,
                      class_ids=None) -> dict:
    """mIoU(a) - mIoU(b) on the full set and its paired-bootstrap 95% CI; ``a``, ``b`` (N, C, C)."""
    if a.shape != b.shape:
        raise ValueError(f"paired variants need the same images: {a.shape} vs {b.shape}")
    ids = None if class_ids is None else list(class_ids)

    def full(x):
        iou = iou_from_confusion(x.sum(0))
        return miou(iou if ids is None else iou[ids])

    counts = resample_counts(len(a), samples, seed)
    diffs = resampled_mious(a, counts, ids) - resampled_mious(b, counts, ids)
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = (np.percentile(diffs, [2.5, 97.5]) if len(diffs) else (np.nan, np.nan))
    return {"diff": full(a) - full(b), "ci_low": float(lo), "ci_high": float(hi), "samples": samples, "seed": seed}


def class_differences(a: np.ndarray, b: np.ndarray, samples: int = 1000, seed: int = 0) -> dict:
    """Per-class IoU(a) - IoU(b) on the full set and its paired-bootstrap 95% interval, each (C,)
    arrays; NaN for a class without an IoU in either. A rare class's interval is wide: it is seen in
    few images, so its difference says little (the merge rule's choice reads these, nightlab.merge)."""
    if a.shape != b.shape:
        raise ValueError(f"paired variants need the same images: {a.shape} vs {b.shape}")
    diff = iou_from_confusion(a.sum(0)) - iou_from_confusion(b.sum(0))
    counts = resample_counts(len(a), samples, seed)
    diffs = _class_ious(_resampled_totals(a, counts)) - _class_ious(_resampled_totals(b, counts))
    seen = np.isfinite(diffs).any(0)
    lo, hi = np.full(len(diff), np.nan), np.full(len(diff), np.nan)
    if seen.any():
        lo[seen], hi[seen] = np.nanpercentile(diffs[:, seen], [2.5, 97.5], axis=0)
    return {"diff": diff, "ci_low": lo, "ci_high": hi, "samples": samples, "seed": seed}
