"""Evaluating the models on a manifest subset: the image model per class, the region model on
crops, a detector's proposals, and the two-level variants at equal region budgets
(docs/design.md 1.8)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from nightlab.boxes import recall_at_k
from nightlab.hdm import crop_iou, merged_crop
from nightlab.inference import class_map, image_probs, int_box, propose, region_probs
from nightlab.labels import NUM_CLASSES
from nightlab.merge import merge
from nightlab.metrics import Evaluator, confusion_matrix
from nightlab.selectors import ground_truth, top_k, uncertain_regions

RECALL_KS = (10, 50, 100)


def evaluate_image_model(model, manifest, scale: float, device, window=None) -> Evaluator:
    """Per-class confusion of the image model on every image of ``manifest`` (native resolution);
    ``window``: the image model's sliding window (nightlab.inference.window_logits)."""
    ev = Evaluator()
    for i in range(len(manifest)):
        probs = image_probs(model, manifest.image(i), scale, device, window)
        ev.update(class_map(probs).cpu(), torch.from_numpy(manifest.label(i)))
    return ev


def evaluate_on_crops(region, image_model, manifest, boxes, rule, image_scale, device, batch_size, window=None):
    """Per-class IoU inside boxes: region model vs the image model's prediction cut to the same box."""
    ev_r, ev_i = Evaluator(), Evaluator()
    for s, g in boxes.groupby("sample"):
        img, lab = manifest.image(int(s)), torch.from_numpy(manifest.label(int(s)))
        full = class_map(image_probs(image_model, img, image_scale, device, window)).cpu()
        h, w = lab.shape
        bxs = g[["x0", "y0", "x1", "y1"]].to_numpy()
        for b, pr in zip(bxs, region_probs(region, img, bxs, rule, device, batch_size)):
            x0, y0, x1, y1 = int_box(b, h, w)
            ev_r.update(class_map(pr).cpu(), lab[y0:y1, x0:x1])
            ev_i.update(full[y0:y1, x0:x1], lab[y0:y1, x0:x1])
    return ev_r.result(), ev_i.result()


def proposal_recall(rdn, manifest, gt, scale, device, ks=RECALL_KS) -> dict:
    """Recall at K of the ground-truth boxes ``gt`` (sample, x0..y1) on every image of ``manifest``."""
    rdn.eval()
    props = propose(rdn, (manifest.image(i) for i in range(len(manifest))), scale, device)  # decoded one at a time
    gts = [gt[gt["sample"] == i][["x0", "y0", "x1", "y1"]].to_numpy() for i in range(len(manifest))]
    return recall_at_k([b for b, _ in props], gts, ks)


# ------------------------------------------------------------------------------ two-level variants

@dataclass
class TwoLevelEval:
    """Per-image results of every variant on one manifest subset.

    ``confusions[variant]`` is (N, C, C) int64 (one confusion matrix per image, so that any
    statistic can be bootstrapped); variants are ``image``, ``merged_<selector>`` at the headline
    budget K, ``<selector>@<k>`` for each k of the curves, and ``merged_gt`` with every
    ground-truth box (the bound). ``hits[name]`` (N, 2) counts per image: ground-truth boxes
    matched and boxes in total, for recall (``<detector>.recall@100``) and for the coverage of the
    boxes where zooming helps (``<selector>.helpful@<k>``).
    """
    confusions: dict[str, np.ndarray] = field(default_factory=dict)
    regions: dict[str, list[int]] = field(default_factory=dict)
    hits: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    boxes: dict[str, list[np.ndarray]] = field(default_factory=dict)  # headline boxes per image, for figures

    def add(self, store: dict, key: str, value) -> None:
        store.setdefault(key, []).append(value)


def _matched(gt: np.ndarray, boxes: np.ndarray, iou: float = 0.5) -> np.ndarray:
    if len(gt) == 0:
        return np.zeros(0, bool)
    if len(boxes) == 0:
        return np.zeros(len(gt), bool)
    return (box_iou(torch.tensor(gt, dtype=torch.float64), torch.tensor(boxes, dtype=torch.float64)).max(1).values
            >= iou).numpy()


def evaluate_two_level(manifest, gt_boxes: pd.DataFrame, image_model, image_scale: float, region, rule,
                       detectors: dict, hard_ids, ks, k: int, nms_thresh: float, entropy_threshold: float,
                       box_cfg, criterion: str, device, batch_size: int = 32, window=None,
                       progress=None) -> TwoLevelEval:
    """Every variant on every image of ``manifest``: one image-model pass per image; each selector's
    top max(ks, k) regions go through the region model once and every budget reuses them.

    ``detectors`` maps a name (rdn, hdm) to (model, scale); ``gt_boxes`` are the hard-class
    context boxes (``sample`` = row of ``manifest``); ``box_cfg`` gives the context growth of the
    uncertainty selector's boxes (a BoxesConfig).
    """
    out = TwoLevelEval()
    budgets = sorted(set(ks) | {k})
    top = max(budgets)
    for i in range(len(manifest)):
        img, lab = manifest.image(i), torch.from_numpy(manifest.label(i))
        h, w = lab.shape
        probs = image_probs(image_model, img, image_scale, device, window)
        pred = class_map(probs).cpu()
        out.add(out.confusions, "image", _cm(pred, lab))
        gt = gt_boxes[gt_boxes["sample"] == i]
        gt_ranked, gt_rank = ground_truth(gt)
        # The bound: every ground-truth box; which of them zooming helps (eq. 1 by the criterion).
        gt_probs = region_probs(region, img, gt_ranked, rule, device, batch_size)
        merged_gt = merge(pred, zip(gt_ranked, gt_probs), hard_ids)[0]
        out.add(out.confusions, "merged_gt", _cm(merged_gt, lab))
        out.add(out.regions, "merged_gt", len(gt_ranked))
        helpful = np.array([_helps(pred, pr, lab, b, hard_ids, criterion, h, w) for b, pr in zip(gt_ranked, gt_probs)],
                           dtype=bool)
        ranked = {"gt": (gt_ranked[:top], gt_probs[:top])}
        for name, (det, scale) in detectors.items():
            (boxes, scores), = propose(det, [img], scale, device)
            out.add(out.hits, f"{name}.recall@100", (int(_matched(gt_ranked, boxes[:100]).sum()), len(gt_ranked)))
            sel = top_k(boxes, scores, top, nms_thresh)
            ranked[name] = (sel, region_probs(region, img, sel, rule, device, batch_size))
        sel, mass = uncertain_regions(probs, entropy_threshold, box_cfg.context, box_cfg.min_size, box_cfg.min_area)
        sel = top_k(sel, mass, top, nms_thresh)
        ranked["entropy"] = (sel, region_probs(region, img, sel, rule, device, batch_size))
        for name, (sel, rp) in ranked.items():
            for kk in budgets:
                merged = merge(pred, zip(sel[:kk], rp[:kk]), hard_ids)[0]
                cm = _cm(merged, lab)
                if kk in ks:
                    out.add(out.confusions, f"{name}@{kk}", cm)
                    covered = _matched(gt_ranked[helpful], sel[:kk])
                    out.add(out.hits, f"{name}.helpful@{kk}", (int(covered.sum()), int(helpful.sum())))
                if kk == k and name != "gt":
                    out.add(out.confusions, f"merged_{name}", cm)
                    out.add(out.regions, f"merged_{name}", len(sel[:kk]))
                    out.add(out.boxes, f"merged_{name}", sel[:kk])
        if progress is not None:
            progress(i)
    out.confusions = {v: np.stack(c) for v, c in out.confusions.items()}
    return out


def _cm(pred: torch.Tensor, lab: torch.Tensor) -> np.ndarray:
    return confusion_matrix(pred.long(), lab.long()).numpy().astype(np.int64)


def _helps(pred, probs, lab, box, hard_ids, criterion: str, h: int, w: int) -> bool:
    """Eq. 1 on a ground-truth box: does the region model (or the merge) beat the image level inside it?"""
    x0, y0, x1, y1 = int_box(box, h, w)
    pi, y = pred[y0:y1, x0:x1], lab[y0:y1, x0:x1]
    cand = merged_crop(pi, probs.cpu(), hard_ids) if criterion == "merged" else class_map(probs.cpu())
    return crop_iou(cand, y) > crop_iou(pi, y)


__all__ = ["NUM_CLASSES", "RECALL_KS", "TwoLevelEval", "evaluate_image_model", "evaluate_on_crops",
           "evaluate_two_level", "proposal_recall"]
