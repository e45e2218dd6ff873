"""The merge rule (supplement section B, docs/design.md 1.7): how the region model's prediction of a
box enters the image-level prediction at native size.

* ``paste`` (the supplement's): inside the box, the region model's class wherever it is a hard class;
* ``margin``: the same, only where the region model's confidence beats the image level's at that
  pixel by ``margin``: where the image model is sure, a less sure region model cannot overrule it;
* ``fuse``: inside the box, the argmax of the two levels' summed log-probabilities (a product of
  experts), wherever it or the image level's class is a hard class: both levels' confidence counts.

Where regions overlap, the more confident region prediction wins (our choice): a running
best-confidence map makes the result independent of the order of the regions. Each region is
handled with whole-tensor operations; memory stays O(H x W) whatever the number of regions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nightlab.regions import int_box

RULES = ("paste", "margin", "fuse")


@dataclass(frozen=True)
class MergeRule:
    kind: str = "paste"
    margin: float = 0.1  # rule margin: the confidence lead the region model needs

    @classmethod
    def of(cls, merge) -> MergeRule:
        """From a MergeConfig (``params.merge``)."""
        return cls(merge.rule, merge.margin)

    @property
    def needs_image_probs(self) -> bool:
        return self.kind != "paste"

    def inside(self, image_pred: torch.Tensor, image_probs: torch.Tensor | None, probs: torch.Tensor, hard):
        """In one box: (class, confidence, where it may replace the image level) from the region model's
        ``probs`` (C, bh, bw), the image level's class map and, for margin and fuse, its probabilities."""
        conf, cls = probs.max(0)
        if self.kind == "paste":
            return cls, conf, torch.isin(cls, hard)
        if self.kind == "margin":
            return cls, conf, torch.isin(cls, hard) & (conf > image_probs.max(0).values + self.margin)
        if self.kind == "fuse":
            fused = (image_probs.clamp_min(1e-8).log() + probs.clamp_min(1e-8).log()).softmax(0)
            conf, cls = fused.max(0)
            return cls, conf, torch.isin(cls, hard) | torch.isin(image_pred, hard)
        raise ValueError(f"unknown merge rule {self.kind!r}: {', '.join(RULES)}")


PASTE = MergeRule()
TOLERANCE = 0.005  # IoU a class may lose against the image level on val (0.5 points) for a rule to be chosen


def choose_rule(rows, tolerance: float = TOLERANCE) -> str:
    """The merge rule to use, from each rule's val results (rows of rule, mIoU and
    lowest_class_ci_high: the lowest, over classes, of the upper end of the paired-bootstrap 95%
    interval of the class's IoU change against the image level, as fractions): the best mIoU among
    the rules that no class is shown to lose more than ``tolerance`` under (its whole interval below
    it); when every rule is, the one whose worst class is least shown to lose.

    The interval, not the point change, because the point change of a class seen in a handful of val
    images moves by more than the tolerance between two trainings of the same models, and with it
    the choice did (reports/decisions.md, merge rule)."""
    rows = list(rows)
    safe = [r for r in rows if r["lowest_class_ci_high"] >= -tolerance]
    if safe:
        return max(safe, key=lambda r: r["mIoU"])["rule"]
    return max(rows, key=lambda r: r["lowest_class_ci_high"])["rule"]


def merge(image_pred: torch.Tensor, regions, hard_ids, rule: MergeRule = PASTE,
          image_probs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """image_pred (H, W) class ids; regions: iterable of (box (x0,y0,x1,y1) native, probs (C, bh, bw));
    ``image_probs`` (C, H, W): the image level's softmax, which the margin and fuse rules read.

    Returns (merged (H, W), replaced mask (H, W) bool).
    """
    if rule.needs_image_probs and image_probs is None:
        raise ValueError(f"merge rule {rule.kind} needs the image level's probabilities")
    h, w = image_pred.shape
    out = image_pred.clone()
    best = torch.full((h, w), -1.0, device=image_pred.device)
    hard = torch.as_tensor(list(hard_ids), dtype=torch.long, device=image_pred.device)
    for box, probs in regions:
        x0, y0, x1, y1 = int_box(box, h, w)
        window = (slice(y0, y1), slice(x0, x1))
        base = None if image_probs is None else image_probs[(slice(None), *window)].to(probs.device)
        cls, conf, may = rule.inside(image_pred[window].to(probs.device), base, probs, hard.to(probs.device))
        take = may.to(out.device) & (conf.to(out.device) > best[window])
        out[window] = torch.where(take, cls.to(out.device), out[window])
        best[window] = torch.where(take, conf.to(out.device), best[window])
    return out, best >= 0


__all__ = ["PASTE", "RULES", "TOLERANCE", "MergeRule", "choose_rule", "merge"]
