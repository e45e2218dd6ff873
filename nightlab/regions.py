"""How a region is shown to the region model: zoomed in, never out (docs/design.md 1.5).

Each box becomes one or more *views*: rectangles cut out of the native image and resized to the
model's input, each predicting its *tile* of the box (tiles of a box do not overlap):

* ``rect`` (default): a view keeps the box's aspect ratio, within five shapes of about
  ``size x size`` input pixels (1:1, 2:1 and 4:1, standing or lying: 64x64, 96x48, 128x32 at size
  64), so a pole or a person is zoomed along its width too; a view is at most ``max_zoom`` times
  native, and a box that one view would show below ``min_scale`` of native is cut into tiles that
  each reach it, so a long box is shown whole whenever one view can show it at ``min_scale``;
* ``zoom``: a square around the box (its long side), at least ``size / max_zoom`` native pixels
  wide; boxes longer than ``size / min_scale`` are tiled;
* ``square``: version 1's rule, the box itself squashed to ``size x size``.

``min_scale`` is at least the image model's ``image_scale`` (the config checks): the region model
always sees at least the detail the image level saw.
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
    rect: tuple[float, float, float, float]  # the region cut out (native pixels) and resized to ``shape``
    shape: tuple[int, int] = (64, 64)  # (h, w) of the model's input

    @property
    def scale(self) -> float:
        """Input pixels per native pixel (> 1: upsampled beyond native)."""
        return self.shape[1] / (self.rect[2] - self.rect[0])


@dataclass(frozen=True)
class CropRule:
    size: int = 64
    mode: str = "zoom"  # rect | zoom | square
    max_zoom: float = 4.0
    min_scale: float = 0.5

    @classmethod
    def of(cls, cfg) -> CropRule:
        """From a RegionModelConfig, or the dict saved with a region model."""
        get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
        return cls(int(get("region_size")), get("crop", "square"), float(get("max_zoom", 4.0)),
                   float(get("min_scale", 0.5)))

    def shapes(self) -> dict[float, tuple[int, int]]:
        """``rect``'s input shapes by aspect ratio (h / w): about ``size**2`` pixels each, sides multiples of 16."""
        out = {}
        for aspect in ASPECTS:
            h = max(16, round(self.size * math.sqrt(aspect) / 16) * 16)
            w = max(16, round(self.size / math.sqrt(aspect) / 16) * 16)
            out[aspect] = (h, w)
        return out


ASPECTS = (0.25, 0.5, 1.0, 2.0, 4.0)  # rect views' aspect ratios (h / w)


def int_box(box, h: int, w: int) -> tuple[int, int, int, int]:
    """A box in native pixels (floats) -> integer (x0, y0, x1, y1), clipped, at least 1 pixel."""
    x0, y0 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 1, w)), int(np.clip(np.ceil(box[3]), y0 + 1, h))
    return x0, y0, x1, y1


def views(box, h: int, w: int, rule: CropRule) -> list[View]:
    """The views that show ``box`` (native pixels) to the region model."""
    x0, y0, x1, y1 = int_box(box, h, w)
    if rule.mode == "square":
        return [View((x0, y0, x1, y1), (x0, y0, x1, y1), (rule.size, rule.size))]
    if rule.mode == "rect":
        return _rect_views((x0, y0, x1, y1), h, w, rule)
    longest = rule.size / rule.min_scale  # native pixels a view may span
    nx, ny = math.ceil((x1 - x0) / longest), math.ceil((y1 - y0) / longest)
    return [View(t, _square(t, h, w, rule), (rule.size, rule.size)) for t in _tiles((x0, y0, x1, y1), nx, ny)]


def _tiles(box, nx: int, ny: int) -> list[tuple[int, int, int, int]]:
    """``box`` cut into ``nx`` x ``ny`` equal integer tiles, row by row."""
    x0, y0, x1, y1 = box
    xs = np.linspace(x0, x1, nx + 1).round().astype(int)
    ys = np.linspace(y0, y1, ny + 1).round().astype(int)
    return [(int(c), int(a), int(d), int(b)) for a, b in zip(ys[:-1], ys[1:]) for c, d in zip(xs[:-1], xs[1:])]


def _square(tile, h: int, w: int, rule: CropRule) -> tuple[float, float, float, float]:
    """A square around the tile, at least size / max_zoom wide, moved inside the image where it fits."""
    x0, y0, x1, y1 = tile
    side = max(x1 - x0, y1 - y0, rule.size / rule.max_zoom)
    return _placed((x0 + x1) / 2, (y0 + y1) / 2, side, side, h, w)


def _placed(cx: float, cy: float, vw: float, vh: float, h: int, w: int) -> tuple[float, float, float, float]:
    """A ``vw`` x ``vh`` rectangle centred on (cx, cy), moved inside the image where it fits."""
    left = min(max(cx - vw / 2, 0.0), max(w - vw, 0.0)) if vw <= w else cx - vw / 2
    top = min(max(cy - vh / 2, 0.0), max(h - vh, 0.0)) if vh <= h else cy - vh / 2
    return left, top, left + vw, top + vh


def _best_shape(bw: int, bh: int, rule: CropRule) -> tuple[float, tuple[int, int], float]:
    """The rect shape that shows a ``bw`` x ``bh`` box largest: (aspect, (h, w), the scale it reaches)."""
    best = None
    for aspect, (ih, iw) in rule.shapes().items():
        scale = min(iw / bw, ih / bh)  # the box fits inside the view
        key = (scale, -abs(math.log(aspect * bw / bh)))  # ties: the shape nearest the box's own
        if best is None or key > best[0]:
            best = (key, aspect, (ih, iw))
    (scale, _), aspect, shape = best
    return aspect, shape, scale


def _rect_views(box, h: int, w: int, rule: CropRule) -> list[View]:
    x0, y0, x1, y1 = box
    nx = ny = 1
    while True:  # cut the box until every tile can be shown at min_scale (the long side first)
        tw, th = (x1 - x0) / nx, (y1 - y0) / ny
        _, _, scale = _best_shape(max(1, math.ceil(tw)), max(1, math.ceil(th)), rule)
        if scale >= rule.min_scale or (tw <= 1 and th <= 1):
            break
        if tw >= th:
            nx += 1
        else:
            ny += 1
    out = []
    for t in _tiles(box, nx, ny):
        tw, th = t[2] - t[0], t[3] - t[1]
        _, (ih, iw), scale = _best_shape(tw, th, rule)
        scale = min(scale, rule.max_zoom)  # a small box: the view grows around it (context), zoom capped
        out.append(View(t, _placed((t[0] + t[2]) / 2, (t[1] + t[3]) / 2, iw / scale, ih / scale, h, w), (ih, iw)))
    return out


def _bounds(win: View) -> tuple[int, int, int, int]:
    """The integer pixels (left, top, right, bottom) a view's rectangle covers."""
    x0, y0, x1, y1 = win.rect
    left, top = int(math.floor(x0)), int(math.floor(y0))
    return left, top, max(left + 1, int(math.ceil(x1))), max(top + 1, int(math.ceil(y1)))


def cut(img: torch.Tensor, win: View, mask: bool = False) -> torch.Tensor:
    """The view of a (C, H, W) tensor resized to (C, *win.shape); outside the image: 0 (or ignore)."""
    c, h, w = img.shape
    left, top, right, bottom = _bounds(win)
    part = img[:, max(top, 0):min(bottom, h), max(left, 0):min(right, w)]
    pad = (max(0, -left), max(0, right - w), max(0, -top), max(0, bottom - h))  # left, right, top, bottom
    if any(pad):
        part = F.pad(part, pad, value=IGNORE if mask else 0)
    if mask:
        return F.interpolate(part[None].float(), size=win.shape, mode="nearest")[0].to(img.dtype)
    return F.interpolate(part[None].float(), size=win.shape, mode="bilinear", align_corners=False,
                         antialias=True)[0]


def cut_field(field: torch.Tensor, win: View, native: tuple[int, int]) -> torch.Tensor:
    """A view of a (C, h, w) map that covers the whole image at another resolution (the image model's
    logits), sampled bilinearly at the view's input pixels: (C, *win.shape). ``native``: the image's
    (H, W); outside the image the border values continue."""
    x0, y0, x1, y1 = win.rect
    ih, iw = win.shape
    big_h, big_w = native
    xs = (x0 + (torch.arange(iw, dtype=torch.float64) + 0.5) * (x1 - x0) / iw) / big_w * 2 - 1
    ys = (y0 + (torch.arange(ih, dtype=torch.float64) + 0.5) * (y1 - y0) / ih) / big_h * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).to(field)  # (ih, iw, 2) as (x, y)
    return F.grid_sample(field[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]


def paste(probs: torch.Tensor, win: View) -> torch.Tensor:
    """A view's output (C, *win.shape) back at native resolution, cut to its tile: (C, th, tw)."""
    left, top, right, bottom = _bounds(win)
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
