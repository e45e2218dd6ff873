"""Evaluating the models on a manifest subset: the image model per class, the region model on
crops, a detector's proposals, and the two-level variants at equal region budgets
(docs/design.md 1.8)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from nightlab import variants
from nightlab.boxes import recall_at_k
from nightlab.hdm import crop_iou, merged_crop
from nightlab.inference import class_map, int_box, native_probs
from nightlab.labels import NUM_CLASSES
from nightlab.merge import PASTE, RULES, MergeRule, merge
from nightlab.metrics import Evaluator, confusion_matrix
from nightlab.selectors import RegionSelection, ground_truth, uncertain_regions
from nightlab.trained import Detector, TrainedModels

RECALL_KS = (10, 50, 100)


def evaluate_image_model(models: TrainedModels, manifest, desc: str = "") -> Evaluator:
    """Per-class confusion of the image model on every image of ``manifest`` (native resolution); ``desc``:
    a progress bar with this label."""
    from tqdm import tqdm

    ev = Evaluator()
    for i in tqdm(range(len(manifest)), desc=desc, unit="image", disable=not desc, mininterval=1.0):
        ev.update(class_map(models.image_probs(manifest.image(i))).cpu(), torch.from_numpy(manifest.label(i)))
    return ev


def image_confusions(models: TrainedModels, manifest) -> np.ndarray:
    """The image model's confusion matrix on each image of ``manifest``: (N, C, C) int64, for paired intervals."""
    out = [_cm(class_map(models.image_probs(manifest.image(i))).cpu(), torch.from_numpy(manifest.label(i)))
           for i in range(len(manifest))]
    return np.stack(out) if out else np.zeros((0, NUM_CLASSES, NUM_CLASSES), np.int64)


def evaluate_on_crops(models: TrainedModels, manifest, boxes, batch_size: int):
    """Per-class IoU inside boxes: region model vs the image model's prediction cut to the same box
    (the per-image confusions of :func:`crop_confusions`, summed)."""
    def result(per_image: np.ndarray) -> dict:
        ev = Evaluator()
        ev.confusion += torch.from_numpy(per_image.sum(0))
        return ev.result()
    region, image = crop_confusions(models, manifest, boxes, batch_size)
    return result(region), result(image)


def crop_confusions(models: TrainedModels, manifest, boxes, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image of ``manifest``, the confusion matrix inside its ``boxes`` (sample, x0..y1) of the region
    model and of the image model's prediction cut to the same boxes: two (N, C, C) int64 arrays, for
    paired intervals (an image without boxes counts zero pixels)."""
    region = np.zeros((len(manifest), NUM_CLASSES, NUM_CLASSES), np.int64)
    image = np.zeros_like(region)
    for s, g in boxes.groupby("sample"):
        img, lab = manifest.image(int(s)), torch.from_numpy(manifest.label(int(s)))
        logits = models.image_logits(img)
        full = class_map(native_probs(logits, *img.shape[:2])).cpu()
        h, w = lab.shape
        bxs = g[["x0", "y0", "x1", "y1"]].to_numpy()
        for b, pr in zip(bxs, models.region_probs(img, bxs, batch_size, logits)):
            x0, y0, x1, y1 = int_box(b, h, w)
            region[int(s)] += _cm(class_map(pr).cpu(), lab[y0:y1, x0:x1])
            image[int(s)] += _cm(full[y0:y1, x0:x1], lab[y0:y1, x0:x1])
    return region, image


def proposal_recall(detector: Detector, manifest, gt, device, ks=RECALL_KS) -> dict:
    """Recall at K of the ground-truth boxes ``gt`` (sample, x0..y1) on every image of ``manifest``."""
    detector.model.eval()
    props = detector.propose((manifest.image(i) for i in range(len(manifest))), device)  # decoded one at a time
    gts = [gt[gt["sample"] == i][["x0", "y0", "x1", "y1"]].to_numpy() for i in range(len(manifest))]
    return recall_at_k([b for b, _ in props], gts, ks)


# ------------------------------------------------------------------------------ two-level variants

@dataclass(frozen=True)
class TwoLevelSpec:
    """What :func:`evaluate_two_level` measures besides the models: the headline selection (K =
    ``selection.max_regions``), the budgets of the curves (``ks``), the entropy selector's threshold and
    box growth (``boxes``, a BoxesConfig), the relabel criterion that says where zooming helps, the
    region model's batch size and the merge rule (``rule``; each of ``rules`` is also measured on the
    headline detector's regions, to choose the rule on val)."""
    selection: RegionSelection
    ks: tuple[int, ...]
    entropy_threshold: float
    boxes: object
    criterion: str
    batch_size: int = 32
    rule: MergeRule = PASTE
    rules: tuple[MergeRule, ...] = ()

    @classmethod
    def of(cls, p) -> TwoLevelSpec:
        """From the params sections merge, evaluation, boxes and hdm.criterion."""
        rule = MergeRule.of(p.merge)
        rules = tuple(MergeRule(kind, p.merge.margin) for kind in RULES)
        return cls(RegionSelection.of(p.merge), tuple(p.evaluation.ks), p.evaluation.entropy_threshold, p.boxes,
                   p.hdm.criterion, p.merge.batch_size, rule, rules)


@dataclass
class TwoLevelEval:
    """Per-image results of every variant on one manifest subset (names: nightlab.variants).

    ``confusions[variant]`` is (N, C, C) int64 (one confusion matrix per image, so that any
    statistic can be bootstrapped); variants are ``image``, ``merged_<selector>`` at the headline
    budget K, ``<selector>@<k>`` for each k of the curves, and ``merged_gt`` with every
    ground-truth box (the bound). ``hits[name]`` (N, 2) counts per image: ground-truth boxes
    matched and boxes in total, for recall (``<detector>.recall@100``) and for the coverage of the
    boxes where zooming helps (``<selector>.helpful@<k>``). ``predictions[variant]``: the class maps
    (H, W) of the variants asked for with ``keep``.
    """
    confusions: dict[str, np.ndarray] = field(default_factory=dict)
    regions: dict[str, list[int]] = field(default_factory=dict)
    hits: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    boxes: dict[str, list[np.ndarray]] = field(default_factory=dict)  # headline boxes per image, for figures
    predictions: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, store: dict, key: str, value) -> None:
        store.setdefault(key, []).append(value)


def _matched(gt: np.ndarray, boxes: np.ndarray, iou: float = 0.5) -> np.ndarray:
    if len(gt) == 0:
        return np.zeros(0, bool)
    if len(boxes) == 0:
        return np.zeros(len(gt), bool)
    return (box_iou(torch.tensor(gt, dtype=torch.float64), torch.tensor(boxes, dtype=torch.float64)).max(1).values
            >= iou).numpy()


def evaluate_two_level(manifest, gt_boxes: pd.DataFrame, models: TrainedModels, hard_ids, spec: TwoLevelSpec,
                       progress=None, keep: tuple[str, ...] = ()) -> TwoLevelEval:
    """Every variant on every image of ``manifest``: one image-model pass per image; each selector's
    top max(ks, K) regions go through the region model once and every budget reuses them (a region's
    prediction does not depend on its batch: nightlab.inference.batch_independent).

    ``models`` holds the image and region models and the detectors (each a selector named after it);
    ``gt_boxes`` are the hard-class context boxes (``sample`` = row of ``manifest``). ``keep``: variants
    whose predictions are kept (``TwoLevelEval.predictions``).
    """
    out = TwoLevelEval()
    k, sel_spec, rule = spec.selection.max_regions, spec.selection, spec.rule
    budgets = sorted(set(spec.ks) | {k})
    top = max(budgets)
    for i in range(len(manifest)):
        img, lab = manifest.image(i), torch.from_numpy(manifest.label(i))
        h, w = lab.shape
        logits = models.image_logits(img)
        probs = native_probs(logits, h, w)
        pred = class_map(probs).cpu()
        _record(out, variants.IMAGE, pred, lab, keep)
        gt = gt_boxes[gt_boxes["sample"] == i]
        gt_ranked, _ = ground_truth(gt)

        def regions(boxes, img=img, logits=logits):
            return models.region_probs(img, boxes, spec.batch_size, logits)

        def merged_with(boxes, rp, how=rule, pred=pred, probs=probs):
            return merge(pred, zip(boxes, rp), hard_ids, how, probs.cpu() if how.needs_image_probs else None)[0]

        # The bound: every ground-truth box; which of them zooming helps (eq. 1 by the criterion).
        gt_probs = regions(gt_ranked)
        _record(out, variants.merged("gt"), merged_with(gt_ranked, gt_probs), lab, keep)
        out.add(out.regions, variants.merged("gt"), len(gt_ranked))
        helpful = np.array([_helps(pred, pr, lab, b, hard_ids, spec, probs, h, w)
                            for b, pr in zip(gt_ranked, gt_probs)], dtype=bool)
        ranked = {"gt": (gt_ranked[:top], gt_probs[:top])}
        for name in models.detectors:
            (boxes, scores), = models.propose(name, [img])
            found = _matched(gt_ranked, boxes[:100])
            out.add(out.hits, variants.recall(name), (int(found.sum()), len(gt_ranked)))
            out.add(out.hits, variants.helpful_recall(name), (int(found[helpful].sum()), int(helpful.sum())))
            sel = sel_spec.top(boxes, scores, top)
            ranked[name] = (sel, regions(sel))
        sel, mass = uncertain_regions(probs, spec.entropy_threshold, spec.boxes)
        sel = sel_spec.top(sel, mass, top, objectness=False)
        ranked["entropy"] = (sel, regions(sel))
        if variants.METHOD in ranked:  # each merge rule on NightLab's own regions, to choose the rule on val
            sel, rp = ranked[variants.METHOD]
            for other in spec.rules:
                _record(out, variants.by_rule(other.kind), merged_with(sel[:k], rp[:k], other), lab, ())
        for name, (sel, rp) in ranked.items():
            for kk in budgets:
                merged = merged_with(sel[:kk], rp[:kk])
                if kk in spec.ks:
                    out.add(out.confusions, variants.at_budget(name, kk), _cm(merged, lab))
                    covered = _matched(gt_ranked[helpful], sel[:kk])
                    out.add(out.hits, variants.helpful(name, kk), (int(covered.sum()), int(helpful.sum())))
                if kk == k and name != "gt":
                    variant = variants.merged(name)
                    _record(out, variant, merged, lab, keep)
                    out.add(out.regions, variant, len(sel[:kk]))
                    out.add(out.boxes, variant, sel[:kk])
        if progress is not None:
            progress(i)
    out.confusions = {v: np.stack(c) for v, c in out.confusions.items()}
    return out


def _record(out: TwoLevelEval, variant: str, pred: torch.Tensor, lab: torch.Tensor, keep) -> None:
    out.add(out.confusions, variant, _cm(pred, lab))
    if variant in keep:
        out.add(out.predictions, variant, pred.byte().cpu().numpy())


def _cm(pred: torch.Tensor, lab: torch.Tensor) -> np.ndarray:
    return confusion_matrix(pred.long(), lab.long()).numpy().astype(np.int64)


def _helps(pred, region, lab, box, hard_ids, spec: TwoLevelSpec, image_probs, h: int, w: int) -> bool:
    """Eq. 1 on a ground-truth box: does the region model (or the merge) beat the image level inside it?"""
    x0, y0, x1, y1 = int_box(box, h, w)
    pi, y = pred[y0:y1, x0:x1], lab[y0:y1, x0:x1]
    if spec.criterion == "merged":
        cand = merged_crop(pi, region.cpu(), hard_ids, spec.rule, image_probs[:, y0:y1, x0:x1].cpu())
    else:
        cand = class_map(region.cpu())
    return crop_iou(cand, y) > crop_iou(pi, y)


__all__ = ["NUM_CLASSES", "RECALL_KS", "TwoLevelEval", "TwoLevelSpec", "crop_confusions", "evaluate_image_model",
           "evaluate_on_crops", "evaluate_two_level", "proposal_recall"]
