"""Semantic segmentation metrics: a confusion matrix accumulated with one ``torch.bincount``.

Conventions (they match cityscapesscripts' ``evalPixelLevelSemanticLabeling``):

* label maps hold trainIds in [0, num_classes); ``ignore`` (255) marks pixels left out entirely,
  so a prediction on an ignore pixel is neither a hit nor a false positive (it must still be a
  valid class id: anything else is a bug upstream and raises);
* the confusion matrix has ground truth on the rows and predictions on the columns;
* a class's IoU is NaN when it is absent from both the (valid) ground truth and the prediction,
  and mIoU is the mean over the classes whose IoU is not NaN.

Evaluation always happens at the label's native resolution: low-resolution logits are upsampled
to it before the argmax, never the labels downsampled to the logits.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from nightlab.labels import IGNORE, NUM_CLASSES


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES,
                     ignore: int = IGNORE) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = ground truth, cols = prediction, on pred's device.

    pred must hold ids in [0, num_classes) everywhere; target the same or ``ignore`` (>= num_classes).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if ignore < num_classes:
        raise ValueError(f"ignore={ignore} must be >= num_classes={num_classes}")
    p = pred.reshape(-1)
    t = target.reshape(-1).to(p.device)
    rows = ignore + 1
    if p.numel() == 0:
        return torch.zeros(num_classes, num_classes, dtype=torch.int64, device=p.device)
    # An id outside the table would silently land in another cell of the flat index; one sync checks all.
    p_lo, p_hi, t_lo, t_hi = torch.stack([x.to(torch.int64) for x in (*torch.aminmax(p), *torch.aminmax(t))]).tolist()
    if p_lo < 0 or p_hi >= num_classes or t_lo < 0 or t_hi >= rows:
        raise ValueError(f"class ids must lie in [0, {num_classes}) (or be {ignore} in the target); "
                         f"got pred in [{p_lo}, {p_hi}], target in [{t_lo}, {t_hi}]")
    # No boolean mask: copying out the valid pixels costs ~20x the bincount itself on CPU. Ignore
    # pixels get their own row (target == ignore), dropped below, so only valid pixels reach the
    # matrix. The narrowest index dtype that fits: the passes over the pixels are memory-bound.
    dtype = torch.int16 if rows * num_classes <= torch.iinfo(torch.int16).max else torch.int32
    idx = t.to(dtype).mul_(num_classes).add_(p.to(dtype))
    counts = torch.bincount(idx, minlength=rows * num_classes).reshape(rows, num_classes)
    if int(counts[num_classes:ignore].sum()):
        raise ValueError(f"target holds ids in [{num_classes}, {ignore}), neither a class nor ignore")
    return counts[:num_classes].clone()  # clone: do not keep the whole (ignore+1)-row buffer alive


def iou_from_confusion(cm) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN where the class is in neither GT nor prediction."""
    cm = np.asarray(cm.cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def miou(iou) -> float:
    iou = np.asarray(iou, dtype=np.float64)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan  # nanmean warns on all-NaN


def subset_miou(iou, class_ids) -> float:
    """mIoU over some classes (e.g. the hard ones); NaN when none of them has an IoU."""
    iou = np.asarray(iou, dtype=np.float64)[list(class_ids)]
    return miou(iou) if len(iou) else math.nan


class Evaluator:
    """Accumulates a confusion matrix over batches (or shards, via :meth:`merge`)."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore: int = IGNORE):
        self.num_classes = num_classes
        self.ignore = ignore
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred: class ids shaped like target ((H,W) or (N,H,W)), or float logits (N,C,h,w).

        Logits may be at a lower resolution than target; they are upsampled bilinearly
        (align_corners=False) to target's size before the argmax.
        """
        if pred.is_floating_point():
            if pred.ndim != 4 or pred.shape[1] != self.num_classes:
                raise ValueError(f"logits must be (N, {self.num_classes}, h, w), got {tuple(pred.shape)}")
            if target.ndim == 2:
                target = target.unsqueeze(0)
            if target.ndim != 3 or target.shape[0] != pred.shape[0]:
                raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(pred.shape)}")
            if pred.shape[-2:] != target.shape[-2:]:
                # float32: CPU bilinear kernels for half precision are slow or missing.
                pred = F.interpolate(pred.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
            pred = pred.argmax(1)
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore).cpu()

    def merge(self, other: Evaluator) -> Evaluator:
        """Add another shard's counts into this one (counts are additive, so any split works)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class evaluator")
        self.confusion += other.confusion
        return self

    def reset(self) -> None:
        self.confusion.zero_()

    def result(self) -> dict:
        cm = self.confusion.numpy()
        iou = iou_from_confusion(cm)
        total = int(cm.sum())
        return {
            "iou": [float(v) for v in iou],
            "mIoU": miou(iou),
            "pixel_acc": float(np.trace(cm) / total) if total else math.nan,
            "support": [int(v) for v in cm.sum(1)],
        }


def headline(result: dict, prefix: str) -> dict:
    """The scalars of an :meth:`Evaluator.result` worth a line in ``dvc metrics diff``: mIoU and pixel
    accuracy (per-class IoU belongs in a table, not in the metrics)."""
    def clean(v):
        return None if v is None or math.isnan(v) else round(float(v), 6)

    return {f"{prefix}.mIoU": clean(result["mIoU"]), f"{prefix}.pixel_acc": clean(result["pixel_acc"])}
