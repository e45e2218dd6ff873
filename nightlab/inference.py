"""Inference for both levels, shared by evaluation, HDM, merging and ``nightlab predict``.

The image model runs once per image at ``image_scale`` and its probabilities are upsampled to
native size; the region model runs on batches of crops, each zoomed to ``region_size``, and its
probabilities are resized back to the crop's native box.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nightlab.data.dataset import crop_resize, resize_pair, to_tensor


@torch.inference_mode()
def image_probs(model, image: np.ndarray, scale: float, device) -> torch.Tensor:
    """Softmax of the image model at native size: (C, H, W) float on ``device``."""
    h, w = image.shape[:2]
    small, _ = resize_pair(image, None, scale)
    logits = model(to_tensor(small)[None].to(device))
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0].softmax(0)


def int_box(box, h: int, w: int) -> tuple[int, int, int, int]:
    """A box in native pixels (floats) -> integer (x0, y0, x1, y1), clipped, at least 1 pixel."""
    x0, y0 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 1, w)), int(np.clip(np.ceil(box[3]), y0 + 1, h))
    return x0, y0, x1, y1


@torch.inference_mode()
def region_probs(model, image: np.ndarray, boxes, size: int, device, batch_size: int = 32) -> list[torch.Tensor]:
    """Softmax of the region model for each box, at the box's native size: list of (C, bh, bw)."""
    h, w = image.shape[:2]
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    boxes = [int_box(b, h, w) for b in np.asarray(boxes, dtype=float).reshape(-1, 4)]
    out: list[torch.Tensor] = []
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        crops = torch.stack([crop_resize(img, b, size) for b in chunk]).float().div_(255).to(device)
        probs = model(crops).softmax(1)
        for b, p in zip(chunk, probs):
            out.append(F.interpolate(p[None], size=(b[3] - b[1], b[2] - b[0]), mode="bilinear", align_corners=False)[0])
    return out


@torch.inference_mode()
def propose(rdn, images: list[np.ndarray], scale: float, device, top_n: int | None = None):
    """RDN proposals for each image, in native pixels, sorted by objectness: [(boxes (K,4), scores (K,))]."""
    out = []
    for image in images:
        small, _ = resize_pair(image, None, scale)
        boxes, scores, _ = rdn(to_tensor(small)[None].to(device))
        b, s = boxes[0].cpu().double().numpy() / scale, scores[0].cpu().double().numpy()
        out.append((b[:top_n], s[:top_n]) if top_n else (b, s))
    return out
