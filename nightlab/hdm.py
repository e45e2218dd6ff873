"""HDM: the hardness detection module (supplement section A, eq. 1-2; docs/design.md 1.6).

**Relabelling (eq. 1).** For RDN proposal j, compare two predictions inside the box against the
labels: ``v'_j = 1 iff IoU(A_j, Y_j) > IoU(P^I_j, Y_j)`` (strict: a tie keeps the cheaper image
level), where ``A_j`` is, by ``hdm.criterion``:

* ``region``: the region model's prediction P^R_j (the supplement's literal reading);
* ``merged``: what the merge (by ``merge.rule``) would make there from P^R_j and P^I_j. The
  merge never pastes the region model's other classes, so this asks the question inference
  faces: would zooming in on this box help the final prediction?

New labels ``Y^P = Y x v'``: a proposal that was positive (IoU >= ``hdm.match_iou`` with a hard
box) stays positive only where zooming in helps.

**Crop IoU** (our definition): the mean over the classes present in the crop's labels *or*
prediction (ignore pixels excluded) of the per-class IoU inside the crop; a hallucinated class
counts 0; a crop with no valid label pixel has IoU NaN and never wins.

**Retraining (eq. 2), ``hdm.targets``** (:func:`finetune_targets`):

* ``relabel`` (the default, eq. 2 as written): each scored proposal's anchor gets its new label
  Y^P in the objectness loss; box regression and the other anchors keep the ground-truth hard
  boxes;
* ``gain`` (beyond the paper): the same anchors trained toward how much zooming helps, a soft
  target, so the top regions are the ones that gain most;
* ``boxes``: the targets are the ground-truth hard boxes. Eq. 1 turns a box background when its
  scored proposals mostly lost (wins < losses; a tie keeps it); a box that no proposal was scored
  against stays positive (the detector must not learn to miss what the RDN missed);
* ``proposals``: the winning proposals' own boxes are the targets (the per-proposal reading; the
  detector then regresses toward its own earlier boxes).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from nightlab.inference import class_map, int_box, native_probs
from nightlab.labels import IGNORE, NUM_CLASSES
from nightlab.merge import PASTE, MergeRule
from nightlab.metrics import confusion_matrix


def crop_iou(pred: torch.Tensor, label: torch.Tensor, num_classes: int = NUM_CLASSES) -> float:
    valid = label != IGNORE
    if not valid.any():
        return float("nan")
    # confusion_matrix ignores labels == IGNORE; predictions there are dropped with them.
    cm = confusion_matrix(pred.long(), label.long(), num_classes, IGNORE).double()
    tp, gt, pr = cm.diag(), cm.sum(1), cm.sum(0)
    present = (gt + pr) > 0
    return float((tp[present] / (gt + pr - tp)[present]).mean())


def merged_crop(image_pred: torch.Tensor, region_probs_: torch.Tensor, hard_ids, rule: MergeRule = PASTE,
                image_probs: torch.Tensor | None = None) -> torch.Tensor:
    """The merge inside one box (nightlab.merge): by the paste rule, the region model's class where it is
    a hard class, else the image level's; ``image_probs``: the image level's softmax in the box, which the
    margin and fuse rules read."""
    hard = torch.as_tensor(list(hard_ids), dtype=torch.long, device=region_probs_.device)
    pred = image_pred.to(region_probs_.device)
    cls, _, may = rule.inside(pred, image_probs, region_probs_, hard)
    return torch.where(may, cls, pred)


def relabel(orig_positive, iou_candidate, iou_image) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 and the new labels: returns (v', Y^P) as int arrays. NaN IoUs compare False."""
    orig = np.asarray(orig_positive, dtype=bool)
    v = np.asarray(iou_candidate, dtype=float) > np.asarray(iou_image, dtype=float)
    return v.astype(np.int8), (orig & v).astype(np.int8)


def match(proposals, gt) -> tuple[np.ndarray, np.ndarray]:
    """For each proposal: its best IoU with a ground-truth box and that box's index (-1 when none)."""
    p = torch.tensor(np.asarray(proposals, float).reshape(-1, 4))
    g = torch.tensor(np.asarray(gt, float).reshape(-1, 4))
    if len(p) == 0 or len(g) == 0:
        return np.zeros(len(p)), np.full(len(p), -1)
    best, idx = box_iou(p, g).max(1)
    return best.numpy(), idx.numpy()


def score_proposals(models, manifest, gt_boxes, props, samples, hard_ids, hdm, rule: MergeRule = PASTE
                    ) -> pd.DataFrame:
    """Crop IoU of the image level, the region model and their merge (by ``rule``) for each proposal, and
    its relabelling by ``hdm.criterion`` (``hdm``: an HdmConfig: criterion, match_iou, batch_size).

    ``models`` is a TrainedModels with the image and region models; ``props`` is one (boxes, scores)
    pair per sample (native pixels); ``gt_boxes`` the hard boxes (``sample`` = row of ``manifest``). One
    row per proposal, with ``gt_index`` the index of its best ground-truth box among the image's (-1: none).
    """
    criterion = hdm.criterion
    if criterion not in ("merged", "region"):
        raise ValueError(f"unknown HDM criterion {criterion!r}: merged or region")
    rows = []
    for s, found in zip(samples, props):  # (boxes, scores[, anchor indices])
        boxes, scores = found[:2]
        anchors = found[2] if len(found) > 2 else np.full(len(boxes), -1)
        img, lab = manifest.image(s), torch.from_numpy(manifest.label(s))
        h, w = lab.shape
        gt = gt_boxes[gt_boxes["sample"] == s][["x0", "y0", "x1", "y1"]].to_numpy()
        best, gt_idx = match(boxes, gt)
        logits = models.image_logits(img)
        probs = native_probs(logits, h, w).cpu()
        full = class_map(probs)
        for j, (b, pr) in enumerate(zip(boxes, models.region_probs(img, boxes, hdm.batch_size, logits))):
            x0, y0, x1, y1 = int_box(b, h, w)
            y, pi = lab[y0:y1, x0:x1], full[y0:y1, x0:x1]
            pr = pr.cpu()
            merged = merged_crop(pi, pr, hard_ids, rule, probs[:, y0:y1, x0:x1])
            rows.append(dict(sample=int(s), rank=j, anchor=int(anchors[j]), x0=b[0], y0=b[1], x1=b[2], y1=b[3],
                             score=float(scores[j]),
                             best_gt_iou=float(best[j]), gt_index=int(gt_idx[j]) if best[j] > 0 else -1,
                             orig_positive=bool(best[j] >= hdm.match_iou),
                             iou_image=crop_iou(pi, y), iou_region=crop_iou(class_map(pr), y),
                             iou_merged=crop_iou(merged, y)))
    df = pd.DataFrame(rows)
    if len(df):
        df["v"], df["new_label"] = relabel(df.orig_positive, df[f"iou_{criterion}"], df.iou_image)
        df["gain"] = df[f"iou_{criterion}"] - df.iou_image  # how much zooming in helps here (NaN: no labels)
    return df


def kept_gt_boxes(table: pd.DataFrame, gt_boxes: pd.DataFrame) -> pd.DataFrame:
    """The ground-truth hard boxes that stay positive under ``hdm.targets: boxes`` (see the module doc).

    ``table`` is score_proposals' output for the same images (``gt_index`` indexes each image's boxes in
    the order of ``gt_boxes``). Adds columns wins, losses (its originally positive proposals).
    """
    out = []
    for s, g in gt_boxes.groupby("sample", sort=True):
        g = g.reset_index(drop=True)
        mine = table[(table["sample"] == s) & table.orig_positive]
        wins = np.bincount(mine.gt_index[mine.v == 1], minlength=len(g))[: len(g)]
        losses = np.bincount(mine.gt_index[mine.v == 0], minlength=len(g))[: len(g)]
        out.append(g.assign(wins=wins, losses=losses)[wins >= losses])
    cols = list(gt_boxes.columns) + ["wins", "losses"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


TARGETS = ("relabel", "gain", "boxes", "proposals")


def finetune_targets(table: pd.DataFrame, gt_boxes: pd.DataFrame, targets: str = "relabel",
                     gain_temperature: float = 0.05) -> tuple[pd.DataFrame, dict | None]:
    """What the HDM fine-tune learns, by ``hdm.targets``: target boxes (sample, x0..y1) and, for the
    relabelled readings, each image's scored anchors with their objectness targets ({sample: (anchor
    indices, targets)}).

    * ``relabel`` (eq. 2 as written): every ground-truth hard box (labels of the other anchors, box
      regression), and each scored proposal's anchor labelled Y^P = Y x v';
    * ``gain``: the same anchors toward sigmoid(gain / ``gain_temperature``), gain = crop IoU of the
      candidate (by the criterion) minus the image level's, so the top regions are the ones that gain
      most; an unscorable crop (no valid label) gets no target;
    * ``boxes``, ``proposals``: see the module doc; no anchor targets.
    """
    cols = ["sample", "x0", "y0", "x1", "y1"]
    if targets == "boxes":
        return kept_gt_boxes(table, gt_boxes)[cols], None
    if targets == "proposals":
        return table[table.new_label == 1][cols], None
    if targets not in TARGETS:
        raise ValueError(f"unknown HDM targets {targets!r}: {', '.join(TARGETS)}")
    scored = table[table.anchor >= 0]
    if targets == "relabel":
        value = scored.new_label.to_numpy(float)
    else:
        gain = scored.gain.to_numpy(float)
        value = 1 / (1 + np.exp(-gain / gain_temperature))
        keep = np.isfinite(gain)
        scored, value = scored[keep], value[keep]
    labels = {}
    for s, idx in scored.groupby("sample").indices.items():
        rows = scored.iloc[idx]
        # one anchor can give two kept proposals only in two levels' NMS: its last label wins, either way
        labels[int(s)] = (rows.anchor.to_numpy(np.int64), value[idx])
    return gt_boxes[cols], labels


def crop_gain(models, manifest, props, hard_ids, hdm, rule: MergeRule = PASTE) -> float:
    """Mean (candidate - image) crop IoU over the given proposals of every image of ``manifest``,
    the candidate being the merge (by ``rule``) or the region model (``hdm.criterion``). Negative when
    zooming hurts."""
    df = score_proposals(models, manifest, pd.DataFrame(columns=["sample", "x0", "y0", "x1", "y1"]), props,
                         list(range(len(manifest))), hard_ids, hdm, rule)
    return float((df[f"iou_{hdm.criterion}"] - df.iou_image).mean()) if len(df) else float("nan")
