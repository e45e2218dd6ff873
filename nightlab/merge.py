"""The merge rule (supplement section B, docs/design.md 1.7).

Start from the image-level prediction at native size; inside each detected region, replace it
by the region-level prediction wherever the region model's argmax is a hard class. Where regions
overlap, the more confident region prediction wins (our choice): a running best-confidence map
makes the result independent of the order of the regions. Each region is handled with whole-
tensor operations; memory stays O(H x W) whatever the number of regions.
"""
from __future__ import annotations

import torch

from nightlab.inference import int_box


def merge(image_pred: torch.Tensor, regions, hard_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """image_pred (H, W) class ids; regions: iterable of (box (x0,y0,x1,y1) native, probs (C, bh, bw)).

    Returns (merged (H, W), replaced mask (H, W) bool).
    """
    h, w = image_pred.shape
    out = image_pred.clone()
    best = torch.full((h, w), -1.0, device=image_pred.device)
    hard = torch.as_tensor(list(hard_ids), dtype=torch.long, device=image_pred.device)
    for box, probs in regions:
        x0, y0, x1, y1 = int_box(box, h, w)
        conf, cls = probs.max(0)
        take = torch.isin(cls, hard) & (conf > best[y0:y1, x0:x1])
        out[y0:y1, x0:x1] = torch.where(take, cls, out[y0:y1, x0:x1])
        best[y0:y1, x0:x1] = torch.where(take, conf, best[y0:y1, x0:x1])
    return out, best >= 0


__all__ = ["merge"]
