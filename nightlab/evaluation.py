"""Evaluating the models on a manifest subset: the image model per class, the region model on
crops, and a detector's proposals (recall of ground-truth boxes)."""
from __future__ import annotations

import torch

from nightlab.boxes import recall_at_k
from nightlab.inference import image_probs, int_box, propose, region_probs
from nightlab.metrics import Evaluator

RECALL_KS = (10, 50, 100)


def evaluate_image_model(model, manifest, scale: float, device) -> Evaluator:
    """Per-class confusion of the image model on every image of ``manifest`` (native resolution)."""
    ev = Evaluator()
    for i in range(len(manifest)):
        probs = image_probs(model, manifest.image(i), scale, device)
        ev.update(probs.argmax(0).cpu(), torch.from_numpy(manifest.label(i)))
    return ev


def evaluate_on_crops(region, image_model, manifest, boxes, region_size, image_scale, device, batch_size):
    """Per-class IoU on crops: region model vs the image model's prediction cut to the same box."""
    ev_r, ev_i = Evaluator(), Evaluator()
    for s, g in boxes.groupby("sample"):
        img, lab = manifest.image(int(s)), torch.from_numpy(manifest.label(int(s)))
        full = image_probs(image_model, img, image_scale, device).argmax(0).cpu()
        h, w = lab.shape
        bxs = g[["x0", "y0", "x1", "y1"]].to_numpy()
        for b, pr in zip(bxs, region_probs(region, img, bxs, region_size, device, batch_size)):
            x0, y0, x1, y1 = int_box(b, h, w)
            ev_r.update(pr.argmax(0).cpu(), lab[y0:y1, x0:x1])
            ev_i.update(full[y0:y1, x0:x1], lab[y0:y1, x0:x1])
    return ev_r.result(), ev_i.result()


def proposal_recall(rdn, manifest, gt, scale, device, ks=RECALL_KS) -> dict:
    """Recall at K of the ground-truth boxes ``gt`` (sample, x0..y1) on every image of ``manifest``."""
    rdn.eval()
    props = propose(rdn, [manifest.image(i) for i in range(len(manifest))], scale, device)
    gts = [gt[gt["sample"] == i][["x0", "y0", "x1", "y1"]].to_numpy() for i in range(len(manifest))]
    return recall_at_k([b for b, _ in props], gts, ks)


__all__ = ["RECALL_KS", "evaluate_image_model", "evaluate_on_crops", "proposal_recall"]
