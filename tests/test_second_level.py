"""The second level's pieces: a region model that refines the image level (step 0 reproduces it),
proposal-like training boxes, batches of one view shape, the merge rules, FLOP counts, and HDM's
relabelled training (eq. 2: the scored proposals' anchors, box regression on the ground truth)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nightlab.boxes import proposal_like
from nightlab.compute import forward_flops, step_flops, total_flops, training_record
from nightlab.hdm import finetune_targets
from nightlab.labels import NUM_CLASSES
from nightlab.merge import MergeRule, merge
from nightlab.models import SegModel
from nightlab.models.loss import make_loss
from nightlab.models.rdn import RDN, RpnSettings, filter_with_anchors
from nightlab.models.segnet import PriorRefiner
from nightlab.train import grouped_batches


class _Loss:
    night_aware_loss, dark_weight, light_reg = False, 0.0, 0.0


def test_a_refining_region_model_reproduces_the_image_level_at_step_0_and_then_learns():
    torch.manual_seed(0)
    model = PriorRefiner(SegModel("test_resnet", NUM_CLASSES, 8), NUM_CLASSES, temperature=2.0)
    x, prior = torch.rand(2, 3, 32, 64), torch.randn(2, NUM_CLASSES, 32, 64) * 3
    out = model(x, prior)
    assert torch.equal(out.argmax(1), prior.argmax(1))  # the image model's prediction, exactly
    assert torch.allclose(out, torch.log_softmax(prior / 2.0, 1))
    y = torch.randint(0, NUM_CLASSES, (2, 32, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = make_loss(_Loss())
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model, (x, prior), y).backward()
        opt.step()
    assert model.gate.item() != 0.0  # the correction is switched on by training
    assert not torch.equal(model(x, prior), out)


def test_proposal_like_copies_stay_in_the_image_and_are_seeded():
    boxes = pd.DataFrame({"sample": [0, 1], "x0": [10.0, 0.0], "y0": [5.0, 0.0], "x1": [30.0, 60.0],
                          "y1": [45.0, 20.0]})
    sizes = {0: (50, 40), 1: (32, 64)}
    out = proposal_like(boxes, 3, 0.3, seed=1, sizes=sizes)
    assert len(out) == 8 and out.iloc[:2].equals(boxes)
    copies = out.iloc[2:]
    assert (copies.x1 - copies.x0 >= 2).all() and (copies.y1 - copies.y0 >= 2).all()
    for r in copies.itertuples():
        h, w = sizes[r.sample]
        assert r.x0 >= 0 and r.x1 <= w + 2 and r.y0 >= 0 and r.y1 <= h + 2
    assert out.equals(proposal_like(boxes, 3, 0.3, seed=1, sizes=sizes))
    assert not out.equals(proposal_like(boxes, 3, 0.3, seed=2, sizes=sizes))
    assert proposal_like(boxes, 0, 0.3, 1, sizes).equals(boxes)


def test_grouped_batches_hold_one_shape_each_and_cover_every_sample_once():
    groups = [(64, 64)] * 37 + [(128, 32)] * 9 + [(32, 128)] * 1
    batches = grouped_batches(groups, 8, seed=3, epoch=0)
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 45  # a last batch of one is dropped: 37 = 4 x 8 + 5, 9 = 8 + 1, 1
    assert 46 not in seen and sum(37 <= i < 46 for i in seen) == 8
    assert batches == grouped_batches(groups, 8, seed=3, epoch=0)
    assert batches != grouped_batches(groups, 8, seed=3, epoch=1)
    assert all(len(b) % 2 == 0 for b in grouped_batches(groups, 8, 3, 0, multiple=2))


def _probs(cls_map: np.ndarray, conf: float) -> torch.Tensor:
    c, h, w = 4, *cls_map.shape
    p = torch.full((c, h, w), (1 - conf) / (c - 1))
    p.scatter_(0, torch.from_numpy(cls_map)[None].long(), conf)
    return p


def test_merge_rules():
    hard = [2]
    image_pred = torch.zeros(4, 4, dtype=torch.long)
    image_probs = _probs(np.zeros((4, 4), int), 0.9)  # the image level is sure: class 0
    image_probs[:, :, :2] = _probs(np.zeros((4, 2), int), 0.4)  # ... but not on the left half
    region = _probs(np.full((4, 4), 2), 0.6)  # the region model says hard class 2, fairly sure
    box = (0, 0, 4, 4)
    paste = merge(image_pred, [(box, region)], hard)[0]
    assert (paste == 2).all()
    margin = merge(image_pred, [(box, region)], hard, MergeRule("margin", 0.1), image_probs)[0]
    assert (margin[:, :2] == 2).all() and (margin[:, 2:] == 0).all()  # only where it leads by the margin
    fuse = merge(image_pred, [(box, region)], hard, MergeRule("fuse"), image_probs)[0]
    # product of experts: 0.4 * 0.133 < 0.2 * 0.6 on the left (class 2 wins), 0.9 * 0.133 > 0.033 * 0.6 right
    assert (fuse[:, :2] == 2).all() and (fuse[:, 2:] == 0).all()
    with pytest.raises(ValueError, match="needs the image level"):
        merge(image_pred, [(box, region)], hard, MergeRule("fuse"))


def test_flop_counts_grow_with_the_batch_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = SegModel("test_resnet", NUM_CLASSES, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = make_loss(_Loss())
    y = torch.zeros(2, 32, 32, dtype=torch.long)
    one = step_flops(model, loss, (torch.rand(2, 3, 32, 32), y))
    two = step_flops(model, loss, (torch.rand(4, 3, 32, 32), torch.zeros(4, 32, 32, dtype=torch.long)))
    assert one > 0 and two == pytest.approx(2 * one, rel=0.01)
    assert forward_flops(model, torch.rand(2, 3, 32, 32)) < one  # training costs more than a forward pass
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    rec = {"a": training_record(10.0, 3, 5.0), "b": training_record(2.0, 4)}
    assert rec["a"]["train_flops"] == 35.0 and total_flops(rec) == 43.0


def _rdn() -> RDN:
    torch.manual_seed(0)
    return RDN("test_resnet", (8, 16), RpnSettings(pre_nms_top_n=60, post_nms_top_n=15))


def test_filter_with_anchors_keeps_what_torchvision_keeps_and_says_which_anchor():
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    model = _rdn().eval()
    x = torch.rand(2, 3, 64, 96)
    obj, deltas = model.network(x)
    images = ImageList(x, [(64, 96)] * 2)
    anchors = model.rpn.anchor_generator(images, obj)
    per_level = [o[0].numel() for o in obj]
    flat_obj, flat_deltas = concat_box_prediction_layers(obj, deltas)
    decoded = model.rpn.box_coder.decode(flat_deltas.detach(), anchors).view(2, -1, 4)
    theirs, their_scores = model.rpn.filter_proposals(decoded, flat_obj, images.image_sizes, per_level)
    boxes, scores, picked = filter_with_anchors(model.rpn, decoded, flat_obj, images.image_sizes, per_level)
    for t, ts, b, s, a, d in zip(theirs, their_scores, boxes, scores, picked, decoded):
        assert torch.equal(t, b) and torch.equal(ts, s)
        inside = (d[a][:, 0] >= 0) & (d[a][:, 2] <= 96) & (d[a][:, 1] >= 0) & (d[a][:, 3] <= 64)
        assert torch.allclose(d[a][inside], b[inside])  # each kept box is its anchor's decoded box (unclipped)


def test_relabelled_training_pushes_the_objectness_of_the_relabelled_anchors():
    """Eq. 2's labels reach exactly the scored anchors: the objectness loss's gradient at anchors far
    from the ground truth (negative or ignored for it) points up once they are relabelled positive."""
    from torchvision.ops import box_iou

    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    gt = torch.tensor([[10.0, 10.0, 40.0, 50.0]])
    model = _rdn().eval()
    with torch.no_grad():
        boxes, _, picked, _ = model(x, with_anchors=True)
    far = box_iou(boxes[0], gt)[:, 0] == 0
    anchors = picked[0][far][:5]
    assert len(anchors) == 5

    def grad_at_anchors(target):
        obj, deltas = model.network(x)
        for o in obj:
            o.retain_grad()
        torch.manual_seed(0)  # the same anchor sample both times
        _, _, losses = model.proposals(x, obj, deltas, [target])
        losses["loss_objectness"].backward()
        return torch.cat([o.grad.permute(0, 2, 3, 1).reshape(1, -1) for o in obj], 1)[0][anchors]

    plain = grad_at_anchors({"boxes": gt})
    relabelled = grad_at_anchors({"boxes": gt, "anchors": anchors, "labels": torch.ones(5)})
    assert (plain >= 0).all()  # background or not sampled for the ground truth alone
    assert (relabelled < 0).all()  # descending the loss raises their objectness
    # box regression only where the ground truth says positive: no ground-truth box, no regression loss
    _, _, losses = model.train()(x, [{"boxes": torch.zeros(0, 4), "anchors": anchors, "labels": torch.ones(5)}])
    assert losses["loss_rpn_box_reg"].item() == 0.0 and losses["loss_objectness"].item() > 0


def test_finetune_targets_by_reading():
    table = pd.DataFrame({"sample": [0, 0, 0, 1], "anchor": [5, 9, 2, 7], "x0": [0.0] * 4, "y0": [0.0] * 4,
                          "x1": [10.0] * 4, "y1": [10.0] * 4, "orig_positive": [True, True, False, True],
                          "v": [1, 0, 1, 1], "new_label": [1, 0, 0, 1], "gain": [0.1, -0.2, 0.05, np.nan],
                          "gt_index": [0, 0, -1, 0]})
    gt = pd.DataFrame({"sample": [0, 1], "x0": [0.0, 0.0], "y0": [0.0, 0.0], "x1": [9.0, 9.0], "y1": [9.0, 9.0]})
    boxes, labels = finetune_targets(table, gt, "relabel")
    assert len(boxes) == 2 and labels[0][0].tolist() == [5, 9, 2] and labels[0][1].tolist() == [1, 0, 0]
    boxes, labels = finetune_targets(table, gt, "gain", 0.05)
    assert 1 not in labels  # no valid label pixel in its crop: no target
    assert labels[0][1][0] > 0.8 and labels[0][1][1] < 0.05 and 0.5 < labels[0][1][2] < 0.8
    boxes, labels = finetune_targets(table, gt, "boxes")
    assert labels is None


def test_the_merge_rule_is_the_best_that_no_class_is_shown_to_lose_half_a_point_under():
    from nightlab.merge import choose_rule

    # lowest_class_ci_high: the lowest upper end of a class's interval of its change
    rows = [{"rule": "paste", "mIoU": 0.40, "lowest_class_ci_high": -0.02},  # a class shown to lose 2 points
            {"rule": "margin", "mIoU": 0.39, "lowest_class_ci_high": 0.01},  # its losses are inside noise
            {"rule": "fuse", "mIoU": 0.38, "lowest_class_ci_high": 0.02}]
    assert choose_rule(rows) == "margin"
    assert choose_rule(rows, tolerance=0.05) == "paste"
    losing = [{**r, "lowest_class_ci_high": r["lowest_class_ci_high"] - 0.1} for r in rows]
    assert choose_rule(losing) == "fuse"  # every rule is shown to cost some class: the one least shown
