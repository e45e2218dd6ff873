"""HDM: the hardness detection module's relabel rule (supplement section A, eq. 1-2).

For RDN proposal j, compare the region model and the image model inside the box against the
labels: ``v'_j = 1 iff IoU(P^R_j, Y_j) > IoU(P^I_j, Y_j)`` (strict, so a tie keeps the cheaper
image-level prediction and the proposal becomes background). New labels ``Y^P = Y x v'``: a
proposal that was positive stays positive only where zooming in helps.

Crop IoU (our definition): the mean over classes present in the crop's labels *or* prediction
(ignore pixels excluded) of the per-class IoU inside the crop. Classes absent from both say
nothing about the crop and are left out; a class predicted but absent from the labels counts as
IoU 0, so hallucinations are punished. A crop with no valid label pixel has IoU NaN and is never
kept.
"""
from __future__ import annotations

import numpy as np
import torch

from nightlab.labels import IGNORE, NUM_CLASSES
from nightlab.metrics import confusion_matrix


def crop_iou(pred: torch.Tensor, label: torch.Tensor, num_classes: int = NUM_CLASSES) -> float:
    valid = label != IGNORE
    if not valid.any():
        return float("nan")
    # confusion_matrix ignores labels == IGNORE; predictions there are dropped with them.
    cm = confusion_matrix(pred.long(), label.long(), num_classes, IGNORE).double()
    tp, gt, pr = cm.diag(), cm.sum(1), cm.sum(0)
    present = (gt + pr) > 0
    return float((tp[present] / (gt + pr - tp)[present]).mean())


def relabel(orig_positive, iou_region, iou_image) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 and the new labels: returns (v', Y^P) as int arrays. NaN IoUs compare False."""
    orig = np.asarray(orig_positive, dtype=bool)
    v = np.asarray(iou_region, dtype=float) > np.asarray(iou_image, dtype=float)
    return v.astype(np.int8), (orig & v).astype(np.int8)
