"""nightlab.regions: a region is zoomed in, never out; long boxes are tiled; predictions go back in place."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nightlab.labels import IGNORE
from nightlab.regions import CropRule, assemble, cut, paste, views

RULE = CropRule(size=64, mode="zoom", max_zoom=4.0, min_scale=0.5)


def _scale(view, size) -> float:
    x0, _, x1, _ = view.rect
    return size / (x1 - x0)


@pytest.mark.parametrize("box", [(100, 50, 112, 90), (10, 10, 30, 20), (0, 0, 300, 40), (50, 5, 60, 250),
                                 (0, 0, 512, 256)])
def test_never_below_min_scale_nor_above_max_zoom_and_aspect_kept(box):
    h, w = 256, 512
    vs = views(box, h, w, RULE)
    for v in vs:
        x0, y0, x1, y1 = v.rect
        assert abs((x1 - x0) - (y1 - y0)) < 1e-9  # a square: the box's aspect ratio is kept
        assert RULE.min_scale - 1e-9 <= _scale(v, RULE.size) <= RULE.max_zoom + 1e-9
        tx0, ty0, tx1, ty1 = v.tile  # the tile is inside its square (context around it, nothing cut off)
        assert x0 - 1e-9 <= tx0 and tx1 <= x1 + 1e-9 and y0 - 1e-9 <= ty0 and ty1 <= y1 + 1e-9
    # the tiles cover the box exactly once
    cover = np.zeros((h, w), int)
    for v in vs:
        tx0, ty0, tx1, ty1 = v.tile
        cover[ty0:ty1, tx0:tx1] += 1
    x0, y0, x1, y1 = box
    assert (cover[y0:y1, x0:x1] == 1).all() and cover.sum() == (x1 - x0) * (y1 - y0)


def test_a_long_fence_is_tiled_instead_of_squashed():
    long_box = (0, 100, 400, 130)  # 400 px long: one 64-px view would see it at 0.16
    assert len(views(long_box, 256, 512, RULE)) == 4  # 400 / (64 / 0.5) -> 4 tiles, each at scale >= 0.5
    assert len(views(long_box, 256, 512, CropRule(64, "square"))) == 1  # version 1: squashed to 64 x 64


def test_a_small_box_is_magnified_at_most_max_zoom():
    (v,) = views((100, 100, 104, 104), 256, 512, RULE)
    assert _scale(v, 64) == pytest.approx(4.0)  # 4 px box in a 16 px square: 4x, not 16x


def test_paste_and_assemble_put_each_view_back_in_place():
    """A model that returns the one-hot labels of its input gives back the labels inside the box."""
    g = np.random.default_rng(0)
    lab = np.kron(g.integers(0, 5, size=(16, 32)), np.ones((16, 16), int)).astype(np.uint8)  # 256 x 512, 16 px blocks
    t = torch.from_numpy(lab)[None]
    box = (8, 20, 400, 60)
    vs = views(box, 256, 512, RULE)
    pieces = []
    for v in vs:
        seen = cut(t, v, mask=True)[0].long()
        onehot = torch.nn.functional.one_hot(seen, 256).permute(2, 0, 1).float()
        pieces.append(paste(onehot, v))
    out = assemble(pieces, vs, box).argmax(0).numpy()
    x0, y0, x1, y1 = box
    assert (out == lab[y0:y1, x0:x1]).mean() > 0.9  # block borders blur by a pixel or two in the two resizes
    assert (out == np.roll(lab, 16, axis=1)[y0:y1, x0:x1]).mean() < 0.5  # a misplaced tile would not pass


def test_outside_the_image_is_ignore_for_labels_and_zero_for_images():
    lab = torch.full((1, 20, 20), 3, dtype=torch.uint8)
    (v,) = views((0, 0, 4, 20), 20, 20, CropRule(16, "zoom", 4.0, 0.5))  # a 20 px square on a 20 px image
    assert cut(lab, v, mask=True).unique().tolist() == [3]
    from nightlab.regions import View
    outside = View((0, 0, 4, 4), (-10.0, -10.0, 10.0, 10.0), (20, 20))
    m = cut(lab, outside, mask=True)[0]
    assert m[0, 0] == IGNORE and m[-1, -1] == 3
    assert cut(lab.float(), outside)[0, 0, 0] == 0


RECT = CropRule(size=64, mode="rect", max_zoom=2.0, min_scale=0.5)


@pytest.mark.parametrize("box", [(100, 50, 112, 90), (10, 10, 30, 20), (0, 0, 300, 40), (50, 5, 60, 250),
                                 (0, 0, 512, 256), (200, 10, 204, 250), (30, 30, 31, 31)])
def test_rect_views_keep_the_aspect_zoom_in_and_cover_the_box_once(box):
    h, w = 256, 512
    vs = views(box, h, w, RECT)
    for v in vs:
        x0, y0, x1, y1 = v.rect
        ih, iw = v.shape
        assert (ih, iw) in RECT.shapes().values()
        assert abs((y1 - y0) / (x1 - x0) - ih / iw) < 1e-9  # the view has its input's aspect: nothing squashed
        assert RECT.min_scale - 1e-9 <= v.scale <= RECT.max_zoom + 1e-9
        tx0, ty0, tx1, ty1 = v.tile
        assert x0 - 1e-6 <= tx0 and tx1 <= x1 + 1e-6 and y0 - 1e-6 <= ty0 and ty1 <= y1 + 1e-6
    cover = np.zeros((h, w), int)
    for v in vs:
        tx0, ty0, tx1, ty1 = v.tile
        cover[ty0:ty1, tx0:tx1] += 1
    x0, y0, x1, y1 = box
    assert (cover[y0:y1, x0:x1] == 1).all() and cover.sum() == (x1 - x0) * (y1 - y0)


def test_a_pole_is_zoomed_along_its_width_and_shown_whole():
    pole = (200, 10, 210, 250)  # 10 px wide, 240 tall
    (v,) = views(pole, 256, 512, RECT)  # one view: the whole silhouette
    assert v.shape == (128, 32) and v.scale == pytest.approx(128 / 240)
    # the square rule needs two views (twice the input pixels) to show it at that scale, and cuts it in two
    square = views(pole, 256, 512, RULE)
    assert len(square) == 2 and all(sq.scale == pytest.approx(128 / 240) for sq in square)
    # a pole longer than one view can show at min_scale is cut, each tile still at min_scale or more
    tall = views((200, 0, 206, 1000), 1024, 512, RECT)
    assert len(tall) == 4 and all(t.scale >= 0.5 for t in tall)


def test_region_probs_put_each_view_of_a_mixed_shape_box_back_in_place():
    """A box whose tiles get views of different shapes: every tile's prediction lands on that tile
    (views are batched by shape, so they come back in another order than the tiles)."""
    from nightlab.inference import region_probs

    class Echo(torch.nn.Module):  # predicts class 1 where the view's red channel is bright, else class 0
        def forward(self, x):
            return torch.cat([1 - x[:, :1], x[:, :1]], 1) * 20

    h, w = 512, 1024
    img = np.zeros((h, w, 3), np.uint8)
    img[:, 900:] = 255  # bright from x = 900 on
    box = (849, 236, 1024, 470)  # tiled 2 x 2; rounding gives its tile columns views of two shapes
    vs = views(box, h, w, RECT)
    assert len({v.shape for v in vs}) > 1, [v.shape for v in vs]
    (probs,) = region_probs(Echo(), img, [box], RECT, "cpu")
    pred = probs.argmax(0).numpy()
    assert (pred[:, 905 - 849:] == 1).all() and (pred[:, :895 - 849] == 0).all()
