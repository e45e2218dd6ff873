"""The headline numbers of a two-level evaluation (nightlab.evaluation.TwoLevelEval), as
reports/metrics.json holds them: each variant's mIoU, the claimed differences with their paired
bootstrap intervals, the share of the gap to the ground-truth-box bound closed, detector recall
(docs/design.md 1.8; names: nightlab.variants)."""
from __future__ import annotations

import numpy as np

from nightlab import variants
from nightlab.metrics import iou_from_confusion, miou, subset_miou
from nightlab.stats import paired_difference
from nightlab.variants import CLAIMS, HEADLINE, IMAGE, merged, metric


def rounded(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def headline_metrics(ev, hard_ids, bootstrap: int, bootstrap_seed: int, baselines: tuple[str, ...] = ()) -> dict:
    """The flat metrics of a two-level evaluation: mIoU (all and hard classes) and regions per image
    of each variant, every claimed difference with its 95% interval, the share of the gap to the
    ground-truth-box bound that HDM closes, and the detectors' recall@100 of hard boxes. ``baselines``:
    names of image models alone whose per-image confusions ``ev.confusions`` holds (variants.baseline),
    each with NightLab's difference from it."""
    cms = ev.confusions
    shown = (*HEADLINE, *(variants.baseline(b) for b in baselines))
    results = {v: iou_from_confusion(cms[v].sum(0)) for v in shown}
    metrics = {}
    for v in shown:
        metrics[metric(v)] = rounded(miou(results[v]))
        metrics[metric(v, "hard_mIoU")] = rounded(subset_miou(results[v], hard_ids))
        if v in ev.regions:
            metrics[metric(v, "regions_per_image")] = round(float(np.mean(ev.regions[v])), 3)
    for claim in (*CLAIMS, *(variants.baseline_claim(b) for b in baselines)):
        for label, ids in (("", None), ("hard_", hard_ids)):
            d = paired_difference(cms[claim.a], cms[claim.b], bootstrap, bootstrap_seed, ids)
            metrics[f"{claim.name}.{label}diff"] = rounded(d["diff"])
            metrics[f"{claim.name}.{label}ci_low"], metrics[f"{claim.name}.{label}ci_high"] = (
                rounded(d["ci_low"]), rounded(d["ci_high"]))
    gap = miou(results[merged("gt")]) - miou(results[IMAGE])
    gain = miou(results[merged(variants.METHOD)]) - miou(results[IMAGE])
    metrics[variants.GAP_CLOSED] = rounded(gain / gap) if gap > 0 else None
    for name in variants.DETECTORS:
        hits = np.asarray(ev.hits[variants.recall(name)])
        metrics[f"{name}.recall_100"] = rounded(hits[:, 0].sum() / max(hits[:, 1].sum(), 1))
        hits = np.asarray(ev.hits[variants.helpful_recall(name)])
        metrics[f"{name}.helpful_recall_100"] = rounded(hits[:, 0].sum() / max(hits[:, 1].sum(), 1))
    metrics["hard_classes.count"] = len(hard_ids)
    return metrics
