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


def resampled_mious(per_image: np.ndarray, counts: np.ndarray, class_ids=None) -> np.ndarray:
    """mIoU of each resample: ``per_image`` (N, C, C) confusion counts, ``counts`` (B, N)."""
    n, c, _ = per_image.shape
    total = np.einsum("bn,nk->bk", counts, per_image.reshape(n, c * c).astype(np.int64)).reshape(-1, c, c)
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
