"""nightlab.hdm (crop IoU, relabel rule of supplement eq. 1) and nightlab.merge (supplement section B)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nightlab.hdm import crop_iou, relabel
from nightlab.labels import IGNORE, NUM_CLASSES
from nightlab.merge import merge
from nightlab.selectors import top_k

T = lambda rows: torch.tensor(rows, dtype=torch.long)  # noqa: E731


# ---------------------------------------------------------------- crop IoU

def test_crop_iou_perfect_and_mean_over_present_classes():
    lab = T([[0, 0], [1, 1]])
    assert crop_iou(lab.clone(), lab) == pytest.approx(1.0)
    pred = T([[0, 0], [0, 1]])
    # class 0: tp 2, gt 2, pred 3 -> 2/3; class 1: tp 1, gt 2, pred 1 -> 1/2; classes 2..18 absent: left out
    assert crop_iou(pred, lab) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_crop_iou_counts_a_hallucinated_class_as_zero():
    lab = T([[0, 0], [0, 0]])
    pred = T([[0, 0], [0, 5]])  # class 5 predicted, absent from the labels
    # class 0: 3/4, class 5: 0 -> mean 3/8
    assert crop_iou(pred, lab) == pytest.approx(3 / 8)


def test_crop_iou_counts_a_missed_class_as_zero():
    lab = T([[0, 0], [0, 7]])
    pred = T([[0, 0], [0, 0]])
    assert crop_iou(pred, lab) == pytest.approx((3 / 4 + 0) / 2)


def test_crop_iou_excludes_ignore_pixels():
    lab = T([[0, 0], [1, IGNORE]])
    pred = T([[0, 0], [1, 9]])  # 9 at an ignore pixel: neither a hallucination nor a miss
    assert crop_iou(pred, lab) == pytest.approx(1.0)
    pred2 = T([[0, 0], [1, 0]])
    assert crop_iou(pred2, lab) == pytest.approx(1.0)


def test_crop_iou_all_ignore_is_nan():
    lab = torch.full((3, 4), IGNORE, dtype=torch.long)
    assert math.isnan(crop_iou(torch.zeros(3, 4, dtype=torch.long), lab))


def test_crop_iou_accepts_uint8_labels():
    lab = torch.tensor([[0, 1], [1, IGNORE]], dtype=torch.uint8)
    pred = torch.tensor([[0, 1], [1, 1]])
    assert crop_iou(pred, lab, NUM_CLASSES) == pytest.approx(1.0)


# ---------------------------------------------------------------- relabel (eq. 1, Y^P = Y x v')

def test_relabel_region_better_keeps_positive():
    v, yp = relabel([1], [0.8], [0.5])
    assert v.tolist() == [1] and yp.tolist() == [1]


def test_relabel_region_worse_turns_positive_to_background():
    v, yp = relabel([1], [0.4], [0.5])
    assert v.tolist() == [0] and yp.tolist() == [0]


def test_relabel_tie_is_background():
    v, yp = relabel([1, 1], [0.5, 0.0], [0.5, 0.0])
    assert v.tolist() == [0, 0] and yp.tolist() == [0, 0]


def test_relabel_originally_negative_stays_negative():
    v, yp = relabel([0], [0.9], [0.1])
    assert v.tolist() == [1]  # the region model is better ...
    assert yp.tolist() == [0]  # ... but Y^P = Y x v' cannot create a positive


def test_relabel_nan_is_background():
    v, yp = relabel([1, 1, 1], [np.nan, 0.7, np.nan], [0.3, np.nan, np.nan])
    assert v.tolist() == [0, 0, 0] and yp.tolist() == [0, 0, 0]


def test_relabel_vectorised_mixture():
    orig = np.array([1, 1, 0, 0, 1, 1])
    ir = np.array([0.9, 0.2, 0.9, 0.2, 0.5, np.nan])
    ii = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    v, yp = relabel(orig, ir, ii)
    assert v.tolist() == [1, 0, 1, 0, 0, 0]
    assert yp.tolist() == [1, 0, 0, 0, 0, 0]
    assert v.dtype.kind == "i" and yp.dtype.kind == "i"


# ---------------------------------------------------------------- merge

def _probs(cls: torch.Tensor, conf: float, c: int = 6) -> torch.Tensor:
    """One-hot-ish probabilities (C, h, w) with ``conf`` on ``cls`` and the rest spread evenly."""
    h, w = cls.shape
    p = torch.full((c, h, w), (1 - conf) / (c - 1))
    p.scatter_(0, cls[None], conf)
    return p


def test_merge_replaces_only_hard_class_pixels_inside_the_box():
    image_pred = torch.zeros(6, 8, dtype=torch.long)  # all class 0
    region_cls = T([[5, 5, 1], [2, 5, 1]])  # box (2, 1, 5, 3): x 2..4, y 1..2
    merged, replaced = merge(image_pred, [((2, 1, 5, 3), _probs(region_cls, 0.9))], hard_ids=[5, 1])
    expect = torch.zeros(6, 8, dtype=torch.long)
    expect[1:3, 2:5] = T([[5, 5, 1], [0, 5, 1]])  # class 2 is not hard: the image prediction stays
    assert torch.equal(merged, expect)
    exp_mask = torch.zeros(6, 8, dtype=torch.bool)
    exp_mask[1:3, 2:5] = torch.tensor([[1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    assert torch.equal(replaced, exp_mask)
    assert torch.equal(image_pred, torch.zeros(6, 8, dtype=torch.long))  # input untouched


def test_merge_with_no_hard_class_or_no_region_is_the_image_prediction():
    image_pred = torch.randint(0, 6, (5, 7), generator=torch.Generator().manual_seed(0))
    region = ((0, 0, 7, 5), _probs(torch.full((5, 7), 3), 0.99))
    merged, replaced = merge(image_pred, [region], hard_ids=[])
    assert torch.equal(merged, image_pred) and not replaced.any()
    merged, replaced = merge(image_pred, [], hard_ids=[3])
    assert torch.equal(merged, image_pred) and not replaced.any()


def test_merge_overlap_is_won_by_the_more_confident_region_in_any_order():
    image_pred = torch.zeros(4, 10, dtype=torch.long)
    a = ((0, 0, 6, 4), _probs(torch.full((4, 6), 1), 0.6))  # x 0..5
    b = ((4, 0, 10, 4), _probs(torch.full((4, 6), 2), 0.8))  # x 4..9, overlaps a on x 4..5
    expect = torch.zeros(4, 10, dtype=torch.long)
    expect[:, :4] = 1
    expect[:, 4:] = 2  # overlap goes to the more confident b
    for regions in ([a, b], [b, a]):
        merged, replaced = merge(image_pred, regions, hard_ids=[1, 2])
        assert torch.equal(merged, expect)
        assert replaced.all()
    # a less confident but hard region never overrides a more confident one, even if it comes last
    c = ((4, 0, 6, 4), _probs(torch.full((4, 2), 1), 0.7))
    for regions in ([a, b, c], [c, b, a], [b, c, a]):
        assert torch.equal(merge(image_pred, regions, hard_ids=[1, 2])[0], expect)


def test_merge_confident_non_hard_pixels_do_not_block_other_regions():
    image_pred = torch.zeros(2, 4, dtype=torch.long)
    a = ((0, 0, 4, 2), _probs(torch.full((2, 4), 3), 0.99))  # confident but class 3 is not hard
    b = ((0, 0, 4, 2), _probs(torch.full((2, 4), 1), 0.5))
    for regions in ([a, b], [b, a]):
        merged, _ = merge(image_pred, regions, hard_ids=[1])
        assert (merged == 1).all()


def test_merge_clips_boxes_at_the_borders():
    h, w = 5, 6
    image_pred = torch.zeros(h, w, dtype=torch.long)
    # a box hanging over the top-left corner (fractional coordinates): it covers x 0..2, y 0..1;
    # the region probabilities are at the clipped box's native size (as inference.region_probs gives)
    merged, _ = merge(image_pred, [((-3.5, -2.0, 2.4, 1.6), _probs(torch.full((2, 3), 4), 0.9))], hard_ids=[4])
    expect = torch.zeros(h, w, dtype=torch.long)
    expect[:2, :3] = 4
    assert torch.equal(merged, expect)
    # and one over the bottom-right corner
    merged, _ = merge(image_pred, [((4, 3, 9, 8), _probs(torch.full((2, 2), 4), 0.9))], hard_ids=[4])
    expect = torch.zeros(h, w, dtype=torch.long)
    expect[3:, 4:] = 4
    assert torch.equal(merged, expect)


# ---------------------------------------------------------------- selectors.top_k

def test_top_k_score_threshold():
    boxes = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    out = top_k(boxes, [0.9, 0.3, 0.5], 10, nms_thresh=0.5, score_thresh=0.5)
    np.testing.assert_allclose(out, [[0, 0, 10, 10], [40, 40, 50, 50]])


def test_top_k_nms_and_order():
    boxes = [[0, 0, 10, 10],  # 0.6
             [1, 0, 11, 10],  # 0.95: overlaps box 0 with IoU 9/11 -> box 0 suppressed
             [30, 30, 40, 40],  # 0.7
             [60, 60, 70, 70]]  # 0.8
    out = top_k(boxes, [0.6, 0.95, 0.7, 0.8], 10, nms_thresh=0.5)
    np.testing.assert_allclose(out, [[1, 0, 11, 10], [60, 60, 70, 70], [30, 30, 40, 40]])
    # a loose NMS keeps the overlapping box
    out = top_k(boxes, [0.6, 0.95, 0.7, 0.8], 10, nms_thresh=0.9)
    assert len(out) == 4


def test_top_k_max_regions_keeps_the_highest_scores():
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(5)]
    scores = [0.1, 0.9, 0.5, 0.7, 0.3]
    out = top_k(boxes, scores, 2, nms_thresh=0.5)
    np.testing.assert_allclose(out, [[20, 0, 30, 10], [60, 0, 70, 10]])
    assert top_k(boxes, scores, 0, 0.5).shape == (0, 4)
    assert top_k(np.zeros((0, 4)), [], 5, 0.5, 0.5).shape == (0, 4)
