import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nightlab.labels import CLASS_IDS, CLASS_NAMES, ID_TO_TRAINID, IGNORE, NUM_CLASSES, TRAINID_TO_ID
from nightlab.metrics import Evaluator, confusion_matrix, headline, iou_from_confusion, miou, subset_miou

# 3-class toy problem, GT on the rows of the comments, prediction below it.
GT = torch.tensor([[0, 0, 1, 1],
                   [2, 2, 255, 255]])
PRED = torch.tensor([[0, 1, 1, 1],
                     [2, 0, 1, 2]])  # predictions on ignore pixels (last two) count nowhere


def test_confusion_matrix_hand_built():
    cm = confusion_matrix(PRED, GT, num_classes=3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[1, 1, 0],
                           [0, 2, 0],
                           [1, 0, 1]]


def test_known_iou_and_ignore_excluded():
    ev = Evaluator(num_classes=3)
    ev.update(PRED, GT)
    res = ev.result()
    # class 0: tp 1, fn 1, fp 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2.
    # The prediction 2 on an ignore pixel (bottom right) is not a false positive for class 2.
    assert res["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert res["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert res["pixel_acc"] == pytest.approx(4 / 6)
    assert res["support"] == [2, 2, 2]


def test_uint8_inputs_do_not_overflow():
    # 18 * 19 + 18 = 360 > 255: the flat index must be computed in int64.
    t = torch.full((4, 4), 18, dtype=torch.uint8)
    cm = confusion_matrix(t, t)
    assert cm[18, 18] == 16 and cm.sum() == 16


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), num_classes=3)  # would alias into row 1
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(torch.tensor([0]), torch.tensor([-1]), num_classes=3)
    with pytest.raises(ValueError, match="class ids"):  # pred must be a class id even on ignore pixels
        confusion_matrix(torch.tensor([0, 255]), torch.tensor([0, 255]), num_classes=3)
    with pytest.raises(ValueError, match="neither a class nor ignore"):
        confusion_matrix(torch.tensor([0]), torch.tensor([5]), num_classes=3)
    assert confusion_matrix(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)).sum() == 0


def test_absent_class_is_nan_and_predicted_only_is_zero():
    ev = Evaluator(num_classes=4)
    ev.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    iou = ev.result()["iou"]
    assert iou[:3] == [1.0, 0.5, 0.0]  # class 2: predicted, never in GT -> 0, not NaN
    assert math.isnan(iou[3])           # class 3: in neither -> NaN, left out of the mean
    assert ev.result()["mIoU"] == pytest.approx(0.5)
    assert math.isnan(miou([math.nan, math.nan]))


def test_low_resolution_logits_are_upsampled_to_label_resolution():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, NUM_CLASSES, 8, 16, generator=g)
    target = torch.randint(0, NUM_CLASSES, (2, 16, 32), generator=g)
    target[:, :2] = IGNORE
    ev = Evaluator()
    ev.update(logits, target)
    up = F.interpolate(logits, size=(16, 32), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(ev.confusion, confusion_matrix(up, target))
    assert ev.confusion.sum() == int((target != IGNORE).sum())  # every native-resolution valid pixel
    # A single (H, W) label is accepted for a batch of one.
    ev1 = Evaluator()
    ev1.update(logits[:1], target[0])
    assert torch.equal(ev1.confusion, confusion_matrix(up[:1], target[:1]))


def test_shard_merge_equals_one_pass():
    g = torch.Generator().manual_seed(1)
    pred = torch.randint(0, NUM_CLASSES, (6, 20, 30), generator=g)
    target = torch.randint(0, NUM_CLASSES, (6, 20, 30), generator=g)
    target[target == 3] = IGNORE
    whole = Evaluator()
    whole.update(pred, target)
    a, b = Evaluator(), Evaluator()
    for i in range(6):
        (a if i % 2 else b).update(pred[i], target[i])
    assert torch.equal(a.merge(b).confusion, whole.confusion)
    np.testing.assert_array_equal(a.result()["iou"], whole.result()["iou"])


def test_headline_keeps_scalars_only():
    res = {"iou": [1 / 3] + [math.nan] * (NUM_CLASSES - 1), "mIoU": 1 / 3, "pixel_acc": 0.5,
           "support": [1] * NUM_CLASSES}
    assert headline(res, "image") == {"image.mIoU": 0.333333, "image.pixel_acc": 0.5}
    assert headline({**res, "mIoU": math.nan}, "x")["x.mIoU"] is None  # JSON has no NaN


def test_subset_miou():
    iou = [0.5, math.nan, 0.25] + [1.0] * (NUM_CLASSES - 3)
    assert subset_miou(iou, [0, 2]) == 0.375 and subset_miou(iou, [0, 1]) == 0.5
    assert math.isnan(subset_miou(iou, [1])) and math.isnan(subset_miou(iou, []))


def _cityscapes_eval(preds, gts_label_ids, tmp_path) -> dict:
    """Run cityscapesscripts' own evaluateImgLists on PNGs in labelId encoding."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    args = copy.copy(cs.args)  # its module-level defaults; never mutate the shared object
    args.evalInstLevelScore = False  # nIoU needs *_instanceIds.png and is not what we compare
    args.JSONOutput, args.quiet = False, True
    args.exportFile = str(tmp_path / "result.json")
    pred_files, gt_files = [], []
    for i, (p, g) in enumerate(zip(preds, gts_label_ids)):
        pred_files.append(str(tmp_path / f"pred_{i}.png"))
        gt_files.append(str(tmp_path / f"gt_{i}_labelIds.png"))
        Image.fromarray(TRAINID_TO_ID[p]).save(pred_files[-1])  # predictions: trainId -> labelId
        Image.fromarray(g).save(gt_files[-1])
    return cs.evaluateImgLists(pred_files, gt_files, args)


def test_agrees_with_cityscapesscripts(tmp_path):
    rng = np.random.default_rng(0)
    # GT drawn from all labelIds 0..33, so cityscapes' ignored ids (unlabeled, ego vehicle, guard rail,
    # ...) appear; our side sees them as 255 through the shared labelId -> trainId table.
    gts = [rng.integers(0, 34, (64, 96), dtype=np.uint8) for _ in range(3)]
    preds = [rng.integers(0, NUM_CLASSES, (64, 96), dtype=np.uint8) for _ in range(3)]
    train, bus, bicycle = CLASS_IDS["train"], CLASS_IDS["bus"], CLASS_IDS["bicycle"]
    gt_train_ids = [ID_TO_TRAINID[g] for g in gts]
    for g, gt, p in zip(gts, gt_train_ids, preds):
        # Edge cases where the two conventions could differ:
        g[gt == train] = 0  # "train": in neither GT nor pred -> NaN in both
        p[p == train] = 0
        g[gt == bus] = 0                          # "bus": predicted, never in GT -> 0.0 in both
        g[gt == bicycle] = 0                      # "bicycle": predicted only on ignore pixels -> NaN in both
        p[p == bicycle] = 0
        p[:4][g[:4] == 0] = bicycle
    gt_train_ids = [ID_TO_TRAINID[g] for g in gts]

    ev = Evaluator()
    for p, g in zip(preds, gt_train_ids):
        ev.update(torch.from_numpy(p), torch.from_numpy(g))
    ours = ev.result()
    ref = _cityscapes_eval(preds, gts, tmp_path)

    # Same semantics on both sides: pixels whose GT is an ignored label never count (not even as
    # false positives), and a class's IoU is NaN only when TP + FP + FN == 0, i.e. absent from both
    # GT and prediction; cityscapes' average skips NaN exactly like our nanmean.
    ref_iou = np.array([ref["classScores"][name] for name in CLASS_NAMES])
    np.testing.assert_allclose(ours["iou"], ref_iou, rtol=0, atol=1e-6)  # NaN positions must match too
    assert math.isnan(ours["iou"][train]) and math.isnan(ours["iou"][bicycle]) and ours["iou"][bus] == 0.0
    assert ours["mIoU"] == pytest.approx(ref["averageScoreClasses"], abs=1e-6)
    # Its confusion matrix (labelId space) restricted to the 19 evaluated classes is ours.
    ids = TRAINID_TO_ID[:NUM_CLASSES]
    np.testing.assert_array_equal(np.asarray(ref["confMatrix"])[np.ix_(ids, ids)], ev.confusion.numpy())
    assert iou_from_confusion(ev.confusion)[CLASS_IDS["road"]] == pytest.approx(ref["classScores"]["road"])
