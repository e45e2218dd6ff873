"""HDM: the hardness detection module's relabel rule (supplement section A, eq. 1-2; docs/design.md 1.6).

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
import pandas as pd
import torch

from nightlab.boxes import match_to_gt
from nightlab.inference import image_probs, int_box, region_probs
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


def score_proposals(manifest, gt_boxes, props, image_model, region, image_scale, region_size, match_iou,
                    device, batch_size, samples) -> pd.DataFrame:
    """Crop IoU of both models for each proposal of each sample, and its relabelling.

    ``props`` is one (boxes, scores) pair per sample (native pixels); ``gt_boxes`` the hard boxes
    (``sample`` = row of ``manifest``). The image model runs once per image; the proposal crops go
    through the region model in batches. One row per proposal.
    """
    rows = []
    for s, (boxes, scores) in zip(samples, props):
        img, lab = manifest.image(s), torch.from_numpy(manifest.label(s))
        h, w = lab.shape
        gt = gt_boxes[gt_boxes["sample"] == s][["x0", "y0", "x1", "y1"]].to_numpy()
        best, positive = match_to_gt(boxes, gt, match_iou)
        full = image_probs(image_model, img, image_scale, device).argmax(0).cpu()
        for j, (b, pr) in enumerate(zip(boxes, region_probs(region, img, boxes, region_size, device, batch_size))):
            x0, y0, x1, y1 = int_box(b, h, w)
            y = lab[y0:y1, x0:x1]
            rows.append(dict(sample=int(s), rank=j, x0=b[0], y0=b[1], x1=b[2], y1=b[3], score=float(scores[j]),
                             best_gt_iou=float(best[j]), orig_positive=bool(positive[j]),
                             iou_region=crop_iou(pr.argmax(0).cpu(), y), iou_image=crop_iou(full[y0:y1, x0:x1], y)))
    df = pd.DataFrame(rows)
    if len(df):
        df["v"], df["new_label"] = relabel(df.orig_positive, df.iou_region, df.iou_image)
    return df


def crop_gain(manifest, props, image_model, region, image_scale, region_size, device, batch_size) -> float:
    """Mean (region - image) crop IoU over the given proposals of every image of ``manifest``."""
    df = score_proposals(manifest, pd.DataFrame(columns=["sample", "x0", "y0", "x1", "y1"]), props, image_model,
                         region, image_scale, region_size, 0.5, device, batch_size, list(range(len(manifest))))
    return float((df.iou_region - df.iou_image).mean()) if len(df) else float("nan")
