"""How a region is shown to the region model: zoomed in, never out (docs/design.md 1.5).

Each box becomes one or more *views*: squares cut out of the native image and resized to
``size x size`` (the model input):

* a view is a square around the box (the box's aspect ratio is kept; the short side gets
  context), at least ``size / max_zoom`` native pixels wide, so small boxes are magnified at most
  ``max_zoom`` times;
* a box longer than ``size / min_scale`` native pixels would be seen at less than ``min_scale``
  (the image model's own scale): it is cut into tiles of at most that length, each with its own
  view, so a long fence or a tall pole is zoomed in piece by piece, never squashed.

``crop: square`` is version 1's rule (the box itself squashed to ``size x size``), kept for the
comparison in reports/decisions.md. The prediction of a view is pasted back onto its tile of
the box only; tiles of a box do not overlap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nightlab.labels import IGNORE


@dataclass(frozen=True)
class View:
    tile: tuple[int, int, int, int]  # x0, y0, x1, y1: the image pixels this view predicts (integers)
    square: tuple[float, float, float, float]  # the region cut out and resized to size x size


@dataclass(frozen=True)
class CropRule:
    size: int = 64
    mode: str = "zoom"  # zoom | square
    max_zoom: float = 4.0
    min_scale: float = 0.5

    @classmethod
    def of(cls, cfg) -> CropRule:
        """From a RegionModelConfig, or the dict saved with a region model."""
        get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
        return cls(int(get("region_size")), get("crop", "square"), float(get("max_zoom", 4.0)),
                   float(get("min_scale", 0.5)))


def int_box(box, h: int, w: int) -> tuple[int, int, int, int]:
    """A box in native pixels (floats) -> integer (x0, y0, x1, y1), clipped, at least 1 pixel."""
    x0, y0 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 1, w)), int(np.clip(np.ceil(box[3]), y0 + 1, h))
    return x0, y0, x1, y1


def views(box, h: int, w: int, rule: CropRule) -> list[View]:
    """The views that show ``box`` (native pixels) to the region model."""
    x0, y0, x1, y1 = int_box(box, h, w)
    if rule.mode == "square":
        return [View((x0, y0, x1, y1), (x0, y0, x1, y1))]
    longest = rule.size / rule.min_scale  # native pixels a view may span
    nx, ny = math.ceil((x1 - x0) / longest), math.ceil((y1 - y0) / longest)
    xs = np.linspace(x0, x1, nx + 1).round().astype(int)
    ys = np.linspace(y0, y1, ny + 1).round().astype(int)
    out = []
    for a, b in zip(ys[:-1], ys[1:]):
        for c, d in zip(xs[:-1], xs[1:]):
            out.append(View((int(c), int(a), int(d), int(b)), _square((c, a, d, b), h, w, rule)))
    return out


def _square(tile, h: int, w: int, rule: CropRule) -> tuple[float, float, float, float]:
    """A square around the tile, at least size / max_zoom wide, moved inside the image where it fits."""
    x0, y0, x1, y1 = tile
    side = max(x1 - x0, y1 - y0, rule.size / rule.max_zoom)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0.0), max(w - side, 0.0)) if side <= w else cx - side / 2
    top = min(max(cy - side / 2, 0.0), max(h - side, 0.0)) if side <= h else cy - side / 2
    return left, top, left + side, top + side


def cut(img: torch.Tensor, win: View, size: int, mask: bool = False) -> torch.Tensor:
    """The view of a (C, H, W) tensor resized to (C, size, size); outside the image: 0 (or ignore)."""
    x0, y0, x1, y1 = win.square
    c, h, w = img.shape
    left, top = int(math.floor(x0)), int(math.floor(y0))
    right, bottom = max(left + 1, int(math.ceil(x1))), max(top + 1, int(math.ceil(y1)))
    part = img[:, max(top, 0):min(bottom, h), max(left, 0):min(right, w)]
    pad = (max(0, -left), max(0, right - w), max(0, -top), max(0, bottom - h))  # left, right, top, bottom
    if any(pad):
        part = F.pad(part, pad, value=IGNORE if mask else 0)
    if mask:
        return F.interpolate(part[None].float(), size=(size, size), mode="nearest")[0].to(img.dtype)
    return F.interpolate(part[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def paste(probs: torch.Tensor, win: View) -> torch.Tensor:
    """A view's output (C, size, size) back at native resolution, cut to its tile: (C, th, tw)."""
    x0, y0, x1, y1 = win.square
    left, top = int(math.floor(x0)), int(math.floor(y0))
    right, bottom = max(left + 1, int(math.ceil(x1))), max(top + 1, int(math.ceil(y1)))
    full = F.interpolate(probs[None], size=(bottom - top, right - left), mode="bilinear", align_corners=False)[0]
    tx0, ty0, tx1, ty1 = win.tile
    return full[:, ty0 - top:ty1 - top, tx0 - left:tx1 - left]


def assemble(pieces: list[torch.Tensor], wins: list[View], box: tuple[int, int, int, int]) -> torch.Tensor:
    """The pasted tiles of one box in a (C, bh, bw) tensor."""
    x0, y0, x1, y1 = box
    out = pieces[0].new_zeros((pieces[0].shape[0], y1 - y0, x1 - x0))
    for p, win in zip(pieces, wins):
        tx0, ty0, tx1, ty1 = win.tile
        out[:, ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = p
    return out
