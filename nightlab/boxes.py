"""Hard-region boxes from ground truth (docs/design.md 1.3).

One box per instance where the dataset has instance ids (Cityscapes ``labelId * 1000 + k``),
else one per connected component of a class. Tiny ones (``min_area`` pixels) are dropped; each
box is grown by ``context`` times its size on every side, to at least ``min_size``, and clipped.
Boxes are made for *all* classes (a ``class_id`` column), so a new hard-class threshold only
filters rows. Coordinates are native pixels, ``x1``/``y1`` exclusive.
"""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou, clip_boxes_to_image

from nightlab.labels import CLASS_NAMES, ID_TO_TRAINID, IGNORE, INSTANCE_CLASSES, NUM_CLASSES

BOX_COLUMNS = ["class_id", "class_name", "instance", "area", "bx0", "by0", "bx1", "by1", "x0", "y0", "x1", "y1"]
_INSTANCE_TRAIN_IDS = {CLASS_NAMES.index(n) for n in INSTANCE_CLASSES if n in CLASS_NAMES}


def expand_boxes(tight: np.ndarray, context: float, min_size: float, h: int, w: int) -> np.ndarray:
    """Grow (N, 4) boxes by ``context`` * size per side, to at least ``min_size``, clipped to the image."""
    t = torch.tensor(np.asarray(tight), dtype=torch.float64).reshape(-1, 4)
    size = (t[:, 2:] - t[:, :2])
    half = (size * (0.5 + context)).clamp_min(min_size / 2)
    centre = (t[:, :2] + t[:, 2:]) / 2
    out = torch.cat([centre - half, centre + half], 1)
    return clip_boxes_to_image(out, (h, w)).numpy()


def _components(mask: np.ndarray, connectivity: int):
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=connectivity)
    for s in stats[1:]:
        x, y, bw, bh, area = (int(v) for v in s)
        yield x, y, x + bw, y + bh, area


def boxes_from_labels(train_ids: np.ndarray, instance_ids: np.ndarray | None, min_area: int = 12,
                      context: float = 0.5, min_size: int = 24, connectivity: int = 8) -> pd.DataFrame:
    h, w = train_ids.shape
    rows = []
    by_instance = set()
    if instance_ids is not None:
        ids = np.unique(instance_ids[instance_ids >= 1000])
        for iid in ids:
            cls = int(ID_TO_TRAINID[int(iid) // 1000])
            if cls == IGNORE:
                continue
            by_instance.add(cls)
            m = (instance_ids == iid).astype(np.uint8)
            area = int(m.sum())
            x, y, bw, bh = cv2.boundingRect(m)
            rows.append((cls, int(iid), area, x, y, x + bw, y + bh))
    for cls in range(NUM_CLASSES):
        mask = train_ids == cls
        if instance_ids is not None and cls in _INSTANCE_TRAIN_IDS:
            mask &= instance_ids < 1000  # pixels of a crowd/group with no instance id: components
        if not mask.any():
            continue
        for x0, y0, x1, y1, area in _components(mask, connectivity):
            rows.append((cls, -1, area, x0, y0, x1, y1))
    df = pd.DataFrame(rows, columns=["class_id", "instance", "area", "bx0", "by0", "bx1", "by1"])
    df = df[df.area >= min_area].reset_index(drop=True)
    ctx = expand_boxes(df[["bx0", "by0", "bx1", "by1"]].to_numpy(float), context, min_size, h, w)
    df[["x0", "y0", "x1", "y1"]] = ctx if len(df) else np.zeros((0, 4))
    df["class_name"] = [CLASS_NAMES[c] for c in df.class_id]
    return df[BOX_COLUMNS].astype({"class_id": "int16", "instance": "int32", "area": "int32"})


def proposal_like(boxes: pd.DataFrame, copies: int, jitter: float, seed: int, sizes: dict) -> pd.DataFrame:
    """``boxes`` (sample, x0..y1) and ``copies`` jittered copies of each, placed and sized as a detector's
    proposals around an object are: each corner moves by up to ``jitter`` of the box's width or height
    (uniform, seeded by ``seed``), clipped to its image (``sizes``: {sample: (h, w)}) and kept at least 2
    pixels. The region model then trains on views like the ones it gets at inference."""
    if copies == 0 or len(boxes) == 0:
        return boxes
    rng = np.random.default_rng(seed)
    xy = boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    wh = np.tile(np.stack([xy[:, 2] - xy[:, 0], xy[:, 3] - xy[:, 1]], 1), 2)
    out = [boxes]
    for _ in range(copies):
        moved = xy + rng.uniform(-jitter, jitter, xy.shape) * wh
        hw = np.array([sizes[int(s)] for s in boxes["sample"]], np.float64)  # (n, 2): h, w
        moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, hw[:, 1:2])
        moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, hw[:, 0:1])
        moved[:, 2] = np.maximum(moved[:, 2], moved[:, 0] + 2)
        moved[:, 3] = np.maximum(moved[:, 3], moved[:, 1] + 2)
        copy = boxes.copy()
        copy[["x0", "y0", "x1", "y1"]] = moved
        out.append(copy)
    return pd.concat(out, ignore_index=True)


def scale_boxes(boxes, factor: float):
    """Native <-> model resolution (``factor`` = image_scale, or 1/image_scale to go back)."""
    return np.asarray(boxes, dtype=np.float64) * factor


def match_to_gt(proposals, gt, iou_thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """For each proposal, its best IoU with any ground-truth box and whether it is >= the threshold."""
    p = torch.tensor(np.asarray(proposals, float).reshape(-1, 4))
    g = torch.tensor(np.asarray(gt, float).reshape(-1, 4))
    if len(p) == 0 or len(g) == 0:
        best = np.zeros(len(p))
    else:
        best = box_iou(p, g).max(1).values.numpy()
    return best, best >= iou_thresh


def recall_at_k(proposals_per_image, gts_per_image, ks=(10, 50, 100), iou_thresh: float = 0.5) -> dict:
    """Share of ground-truth boxes matched (IoU >= thresh) by any of the top-k proposals, pooled over images."""
    hits = dict.fromkeys(ks, 0)
    total = 0
    for props, gts in zip(proposals_per_image, gts_per_image):
        g = torch.tensor(np.asarray(gts, float).reshape(-1, 4))
        total += len(g)
        if len(g) == 0:
            continue
        p = torch.tensor(np.asarray(props, float).reshape(-1, 4))
        for k in ks:
            if len(p[:k]):
                hits[k] += int((box_iou(g, p[:k]).max(1).values >= iou_thresh).sum())
    return {k: (hits[k] / total if total else float("nan")) for k in ks}


def boxes_for(boxes: pd.DataFrame, manifest, class_ids=None) -> pd.DataFrame:
    """The boxes of a manifest subset (from ``Manifest.select``), ``sample`` renumbered to its rows."""
    pos = {int(r): i for i, r in enumerate(manifest.df.row)}
    out = boxes[boxes["sample"].isin(pos)]
    if class_ids is not None:
        out = out[out.class_id.isin(list(class_ids))]
    return out.assign(sample=out["sample"].map(pos)).reset_index(drop=True)
