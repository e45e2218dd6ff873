"""The headline numbers of a two-level evaluation (nightlab.evaluation.TwoLevelEval), as
reports/metrics.json holds them: each variant's mIoU, the claimed differences with their paired
bootstrap intervals, the share of the gap to the ground-truth-box bound closed, detector recall
(docs/design.md 1.8)."""
from __future__ import annotations

import numpy as np

from nightlab.metrics import iou_from_confusion, miou, subset_miou
from nightlab.stats import paired_difference

HEADLINE = ["image", "merged_rdn", "merged_hdm", "merged_entropy", "merged_gt"]
# Differences the method claims, each with its paired-bootstrap interval: (name, a, b).
CLAIMS = [("hdm_vs_image", "merged_hdm", "image"), ("hdm_vs_rdn", "merged_hdm", "merged_rdn"),
          ("hdm_vs_entropy", "merged_hdm", "merged_entropy")]


def rounded(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def headline_metrics(ev, hard_ids, bootstrap: int, bootstrap_seed: int) -> dict:
    """The flat metrics of a two-level evaluation: mIoU (all and hard classes) and regions per image
    of each variant, every claimed difference with its 95% interval, the share of the gap to the
    ground-truth-box bound that HDM closes, and the detectors' recall@100 of hard boxes."""
    cms = ev.confusions
    results = {v: iou_from_confusion(cms[v].sum(0)) for v in HEADLINE}
    metrics = {}
    for v in HEADLINE:
        metrics[f"{v}.mIoU"] = rounded(miou(results[v]))
        metrics[f"{v}.hard_mIoU"] = rounded(subset_miou(results[v], hard_ids))
        if v != "image":
            metrics[f"{v}.regions_per_image"] = round(float(np.mean(ev.regions[v])), 3)
    for name, a, b in CLAIMS:
        for label, ids in (("", None), ("hard_", hard_ids)):
            d = paired_difference(cms[a], cms[b], bootstrap, bootstrap_seed, ids)
            metrics[f"{name}.{label}diff"] = rounded(d["diff"])
            metrics[f"{name}.{label}ci_low"], metrics[f"{name}.{label}ci_high"] = (rounded(d["ci_low"]),
                                                                                 rounded(d["ci_high"]))
    gap = miou(results["merged_gt"]) - miou(results["image"])
    gain = miou(results["merged_hdm"]) - miou(results["image"])
    metrics["merged_hdm.gap_closed"] = rounded(gain / gap) if gap > 0 else None
    for name in ("rdn", "hdm"):
        hits = np.asarray(ev.hits[f"{name}.recall@100"])
        metrics[f"{name}.recall_100"] = rounded(hits[:, 0].sum() / max(hits[:, 1].sum(), 1))
    metrics["hard_classes.count"] = len(hard_ids)
    return metrics
