"""nightlab.stats (paired bootstrap), nightlab.selectors (ground truth, uncertainty) and the HDM
fine-tune targets (nightlab.hdm.kept_gt_boxes / finetune_targets), on hand-built inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nightlab.config import BoxesConfig
from nightlab.hdm import finetune_targets, kept_gt_boxes, merged_crop
from nightlab.metrics import iou_from_confusion, miou
from nightlab.selectors import entropy_map, ground_truth, top_k, uncertain_regions
from nightlab.stats import class_differences, paired_difference, resample_counts, resampled_mious

# ---------------------------------------------------------------- stats

def _confusions(n: int, correct: float, rng, c: int = 3, pixels: int = 100) -> np.ndarray:
    """n per-image confusion matrices: each image has ``pixels`` per class, ``correct`` of them right."""
    out = np.zeros((n, c, c), np.int64)
    for i in range(n):
        for k in range(c):
            right = int(rng.binomial(pixels, correct))
            out[i, k, k] = right
            out[i, k, (k + 1) % c] = pixels - right
    return out


def test_resample_counts_draw_n_of_n_with_replacement():
    counts = resample_counts(7, 50, seed=3)
    assert counts.shape == (50, 7) and counts.dtype == np.int64
    assert (counts.sum(1) == 7).all()
    assert (counts != 1).any()  # with replacement: some image drawn twice, another not at all
    np.testing.assert_array_equal(counts, resample_counts(7, 50, seed=3))


def test_resampled_miou_of_the_identity_draw_is_the_full_miou():
    rng = np.random.default_rng(0)
    per_image = _confusions(5, 0.7, rng)
    ones = np.ones((1, 5), np.int64)
    full = miou(iou_from_confusion(per_image.sum(0)))
    assert resampled_mious(per_image, ones)[0] == pytest.approx(full)
    # class subset
    sub = miou(iou_from_confusion(per_image.sum(0))[[0, 2]])
    assert resampled_mious(per_image, ones, [0, 2])[0] == pytest.approx(sub)


def test_paired_difference_of_a_variant_with_itself_is_exactly_zero():
    a = _confusions(20, 0.6, np.random.default_rng(1))
    d = paired_difference(a, a.copy(), samples=200, seed=0)
    assert d["diff"] == 0 and d["ci_low"] == 0 and d["ci_high"] == 0


def test_paired_difference_detects_a_real_gain_and_brackets_it():
    rng = np.random.default_rng(2)
    worse, better = _confusions(40, 0.6, rng), _confusions(40, 0.8, rng)
    d = paired_difference(better, worse, samples=500, seed=0)
    assert d["ci_low"] > 0  # a 0.2-accuracy gain on 40 images is beyond noise
    assert d["ci_low"] <= d["diff"] <= d["ci_high"]
    flipped = paired_difference(worse, better, samples=500, seed=0)
    assert flipped["diff"] == pytest.approx(-d["diff"])
    assert flipped["ci_high"] == pytest.approx(-d["ci_low"])


def test_paired_difference_is_inside_noise_for_two_draws_of_the_same_model():
    rng = np.random.default_rng(4)
    a, b = _confusions(30, 0.7, rng), _confusions(30, 0.7, rng)
    d = paired_difference(a, b, samples=500, seed=0)
    assert d["ci_low"] < 0 < d["ci_high"]


def test_class_differences_bracket_each_class_and_are_wide_for_a_class_seen_in_few_images():
    rng = np.random.default_rng(6)
    image, rule = _confusions(40, 0.7, rng), _confusions(40, 0.7, rng)
    rule[:, 0] = image[:, 0]  # class 0: the rule changes nothing
    # class 1: the rule loses 0.3 of its pixels in every image (a real loss, seen everywhere)
    lost = (image[:, 1, 1] * 0.3).astype(np.int64)
    rule[:, 1] = image[:, 1]
    rule[:, 1, 1] -= lost
    rule[:, 1, 0] += lost
    # class 2: present in 3 of 40 images only, where the rule loses it in one of them
    image[3:, 2], rule[3:, 2] = 0, 0
    rule[:3, 2] = image[:3, 2]
    rule[0, 2, 0] += rule[0, 2, 2]
    rule[0, 2, 2] = 0
    d = class_differences(rule, image, samples=500, seed=0)
    full = iou_from_confusion(rule.sum(0)) - iou_from_confusion(image.sum(0))
    np.testing.assert_allclose(d["diff"], full)
    assert (d["ci_low"] <= d["diff"] + 1e-12).all() and (d["diff"] <= d["ci_high"] + 1e-12).all()
    assert d["ci_high"][1] < -0.1  # the loss seen in every image is shown
    assert d["ci_low"][2] < d["diff"][2] < 0  # the rare class also loses on the point estimate ...
    assert d["ci_high"][2] - d["ci_low"][2] > d["ci_high"][1] - d["ci_low"][1]  # ... with a wider interval
    np.testing.assert_array_equal(d["ci_low"], class_differences(rule, image, samples=500, seed=0)["ci_low"])


def test_class_differences_leave_an_absent_class_out_and_cannot_show_a_loss_in_one_image_of_two():
    """What the merge rule's guard can and cannot see (nightlab.merge.choose_rule): a class in no
    image has no interval, and a resample without a class leaves it out (no IoU in either); a class
    in two images, wiped out in one, loses half its IoU, yet about a third of the resamples leave
    that image out and keep the other, so the interval's upper end stays at 0: not shown."""
    image = np.zeros((40, 4, 4), np.int64)
    image[:, 0, 0] = 100  # class 0 everywhere, right
    image[0, 1, 1] = image[1, 1, 1] = 50  # class 1 in images 0 and 1
    rule = image.copy()
    rule[0, 1, 1], rule[0, 1, 0] = 0, 50  # the rule wipes it out in image 0
    d = class_differences(rule, image, samples=500, seed=0)
    assert d["diff"][1] == -0.5 and d["ci_low"][1] == -1.0 and d["ci_high"][1] == 0.0
    assert np.isnan(d["diff"][2:]).all() and np.isnan(d["ci_low"][2:]).all() and np.isnan(d["ci_high"][2:]).all()
    assert d["diff"][0] < 0 and d["ci_high"][0] <= 0  # class 0 gains false positives where class 1 was


def test_pairing_narrows_the_interval_when_images_differ_in_difficulty():
    """The point of pairing: per-image difficulty shared by both variants cancels."""
    rng = np.random.default_rng(5)
    hard = rng.uniform(0.3, 0.95, size=40)  # each image's own difficulty
    a = np.stack([_confusions(1, p, rng)[0] for p in hard])
    b = np.stack([_confusions(1, min(p + 0.03, 1.0), rng)[0] for p in hard])
    paired = paired_difference(b, a, samples=500, seed=0)
    # unpaired: resample the two sets independently
    ca, cb = resample_counts(40, 500, 1), resample_counts(40, 500, 2)
    unpaired = resampled_mious(b, cb) - resampled_mious(a, ca)
    lo, hi = np.percentile(unpaired, [2.5, 97.5])
    assert paired["ci_high"] - paired["ci_low"] < 0.5 * (hi - lo)


def test_paired_difference_rejects_unpaired_shapes():
    with pytest.raises(ValueError, match="same images"):
        paired_difference(np.zeros((3, 2, 2)), np.zeros((4, 2, 2)))


# ---------------------------------------------------------------- selectors

def test_ground_truth_ranks_smallest_object_first_and_top_k_keeps_that_order():
    gt = pd.DataFrame(dict(x0=[0, 100, 50], y0=[0, 0, 50], x1=[40, 110, 70], y1=[40, 10, 70],
                           area=[1600, 100, 400]))
    boxes, scores = ground_truth(gt)
    np.testing.assert_array_equal(boxes[:, 0], [100, 50, 0])
    assert (np.diff(scores) < 0).all()
    np.testing.assert_array_equal(top_k(boxes, scores, 2, nms_thresh=1.0)[:, 0], [100, 50])


def test_entropy_map_is_zero_for_one_hot_and_one_for_uniform():
    c = 5
    onehot = torch.zeros(c, 2, 2)
    onehot[1] = 1
    assert torch.allclose(entropy_map(onehot), torch.zeros(2, 2), atol=1e-6)
    assert torch.allclose(entropy_map(torch.full((c, 2, 2), 1 / c)), torch.ones(2, 2), atol=1e-6)


def test_uncertain_regions_box_the_uncertain_blobs_ranked_by_entropy_mass():
    c, h, w = 4, 64, 96
    probs = torch.zeros(c, h, w)
    probs[0] = 1.0  # confident everywhere ...
    probs[:, 10:18, 10:18] = 1 / c  # ... but a small fully uncertain patch
    probs[:, 30:50, 60:90] = 1 / c  # and a large one
    boxes, mass = uncertain_regions(probs, 0.5, BoxesConfig(context=0.0, min_size=1, min_area=4), stride=2)
    assert len(boxes) == 2
    big, small = (0, 1) if mass[0] > mass[1] else (1, 0)
    np.testing.assert_allclose(boxes[big], [60, 30, 90, 50])
    np.testing.assert_allclose(boxes[small], [10, 10, 18, 18])
    assert mass[big] == pytest.approx(20 * 30, rel=1e-5) and mass[small] == pytest.approx(64, rel=1e-5)
    first = top_k(boxes, mass, 1)
    np.testing.assert_allclose(first[0], [60, 30, 90, 50])


def test_uncertain_regions_none_when_the_model_is_sure():
    probs = torch.zeros(3, 16, 16)
    probs[2] = 1
    boxes, mass = uncertain_regions(probs, 0.5, BoxesConfig())
    assert boxes.shape == (0, 4) and mass.shape == (0,)


def test_uncertain_regions_drop_specks_below_min_area():
    probs = torch.zeros(3, 32, 32)
    probs[0] = 1
    probs[:, 4:6, 4:6] = 1 / 3  # 4 pixels
    assert len(uncertain_regions(probs, 0.5, BoxesConfig(min_area=8), stride=1)[0]) == 0
    assert len(uncertain_regions(probs, 0.5, BoxesConfig(min_area=4), stride=1)[0]) == 1


# ---------------------------------------------------------------- HDM: merged crop and fine-tune targets

def test_merged_crop_takes_the_region_class_only_where_it_is_hard():
    image_pred = torch.tensor([[0, 0], [0, 0]])
    region = torch.zeros(4, 2, 2)
    region[3, 0, 0] = 1  # hard class 3 at (0, 0)
    region[2, 0, 1] = 1  # non-hard class 2 at (0, 1): not pasted
    region[1, 1] = 1  # non-hard 1 on the second row
    out = merged_crop(image_pred, region, hard_ids=[3])
    assert out.tolist() == [[3, 0], [0, 0]]


def _gt(sample, n):
    return pd.DataFrame(dict(sample=[sample] * n, x0=np.arange(n) * 100.0, y0=0.0,
                             x1=np.arange(n) * 100.0 + 50, y1=50.0, class_id=11))


def _table(rows):
    return pd.DataFrame(rows, columns=["sample", "gt_index", "orig_positive", "v", "new_label",
                                       "x0", "y0", "x1", "y1"])


def test_kept_gt_boxes_majority_rule_with_ties_and_unscored_boxes():
    """Worked example of docs/design.md 1.6: image 0 has four hard boxes."""
    gt = _gt(0, 4)
    table = _table([
        # box 0: two wins, one loss -> kept
        (0, 0, True, 1, 1, 0, 0, 50, 50), (0, 0, True, 1, 1, 2, 0, 52, 50), (0, 0, True, 0, 0, 4, 0, 54, 50),
        # box 1: one win, one loss -> a tie keeps it
        (0, 1, True, 1, 1, 100, 0, 150, 50), (0, 1, True, 0, 0, 101, 0, 151, 50),
        # box 2: one loss -> background
        (0, 2, True, 0, 0, 200, 0, 250, 50),
        # box 3: only a proposal below match_iou scored against it (not originally positive) -> unscored, kept
        (0, 3, False, 0, 0, 320, 0, 360, 50),
        # a proposal matching nothing
        (0, -1, False, 1, 0, 500, 0, 520, 20),
    ])
    kept = kept_gt_boxes(table, gt)
    assert kept.x0.tolist() == [0.0, 100.0, 300.0]
    assert kept.wins.tolist() == [2, 1, 0] and kept.losses.tolist() == [1, 1, 0]
    t, anchor_labels = finetune_targets(table, gt, "boxes")
    assert list(t.columns) == ["sample", "x0", "y0", "x1", "y1"] and len(t) == 3 and anchor_labels is None


def test_kept_gt_boxes_keeps_each_image_apart():
    gt = pd.concat([_gt(0, 2), _gt(5, 2)], ignore_index=True)
    table = _table([(0, 0, True, 0, 0, 0, 0, 50, 50),  # image 0 box 0 loses
                    (5, 1, True, 0, 0, 100, 0, 150, 50)])  # image 5 box 1 loses
    kept = kept_gt_boxes(table, gt)
    assert list(zip(kept["sample"], kept.x0)) == [(0, 100.0), (5, 0.0)]


def test_finetune_targets_proposals_are_the_winning_positive_proposals():
    gt = _gt(0, 2)
    table = _table([(0, 0, True, 1, 1, 1, 1, 49, 49), (0, 1, True, 0, 0, 100, 0, 150, 50),
                    (0, -1, False, 1, 0, 400, 0, 420, 20)])
    t, anchor_labels = finetune_targets(table, gt, "proposals")
    assert t[["x0", "y0", "x1", "y1"]].values.tolist() == [[1, 1, 49, 49]] and anchor_labels is None
    with pytest.raises(ValueError, match="unknown HDM targets"):
        finetune_targets(table, gt, "anchors")


# ---------------------------------------------------------------- a fresh test split (nightlab confirm)

def test_fresh_test_split_is_new_scenes_with_their_hard_boxes(tmp_path):
    from nightlab.config import parse_params
    from nightlab.confirm import fresh_test_split, hard_boxes

    # boxes' size floors scaled with the frame: 64x128 is 1/8 of the default 512x1024
    p = parse_params({"data": {"synthetic": {"height": 64, "width": 128}}, "boxes": {"min_area": 6, "min_size": 6}})
    a = fresh_test_split(tmp_path / "a", p.data.synthetic, 7, 2).select(p.splits.report)
    b = fresh_test_split(tmp_path / "b", p.data.synthetic, 7, 2).select(p.splits.report)
    c = fresh_test_split(tmp_path / "c", p.data.synthetic, 8, 2).select(p.splits.report)
    assert len(a) == 2 and set(a.df.domain) == {"night"} and set(a.df.split) == {"test"}
    np.testing.assert_array_equal(a.image(1), b.image(1))  # deterministic in the seed
    assert not np.array_equal(a.image(1), c.image(1))  # another seed: other scenes
    hard = [5, 6, 7]  # pole, traffic light, traffic sign
    boxes = hard_boxes(a, p.boxes, hard)
    assert set(boxes["sample"]) <= {0, 1} and set(boxes.class_id) <= set(hard) and len(boxes)
