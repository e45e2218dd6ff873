"""The names of what the evaluation measures: one registry that the evaluation, the headline
metrics, the reports, the experiment tables and the pipeline's Prefect artifacts all read, so a
variant is spelled in one place (docs/design.md 1.8).

* ``image``: the image level alone;
* ``merged_<selector>``: the two levels, merging the top K = ``merge.max_regions`` regions of a
  selector (``merged_gt``: every ground-truth hard box, the bound of the region step);
* ``<selector>@<k>``: the same at another budget k of ``evaluation.ks`` (the equal-budget curves);
* ``<selector>.helpful@<k>``: how many of the ground-truth boxes where zooming helps those k
  regions cover; ``<detector>.recall@100``: how many hard boxes a detector's top 100 proposals find.
"""
from __future__ import annotations

from dataclasses import dataclass

IMAGE = "image"
DETECTORS = ("rdn", "hdm")  # trained selectors: proposals ranked by objectness
SELECTORS = (*DETECTORS, "entropy", "gt")
METHOD = "hdm"  # NightLab's own selector: the headline's "NightLab" row


def merged(selector: str) -> str:
    return f"merged_{selector}"


def at_budget(selector: str, k: int) -> str:
    return f"{selector}@{k}"


def helpful(selector: str, k: int) -> str:
    return f"{selector}.helpful@{k}"


def recall(detector: str) -> str:
    return f"{detector}.recall@100"


def baseline(name: str) -> str:
    """An image model alone at the system's training FLOPs (params ``baselines.<name>``)."""
    return f"baseline_{name}"


def baseline_claim(name: str) -> Claim:
    return Claim(f"hdm_vs_{name}", merged(METHOD), baseline(name),
                 f"merged HDM - baseline {name} (same training FLOPs)", f"HDM - {name}")


def by_rule(rule: str) -> str:
    """NightLab's own regions merged by another merge rule (nightlab.merge), to choose the rule on val."""
    return f"{merged(METHOD)}.rule_{rule}"


def helpful_recall(detector: str) -> str:
    """How many of the ground-truth boxes where zooming helps a detector's top 100 proposals find."""
    return f"{detector}.helpful_recall@100"


def metric(variant: str, what: str = "mIoU") -> str:
    """A key of reports/metrics.json: ``merged_hdm.mIoU``, ``image.hard_mIoU``, ..."""
    return f"{variant}.{what}"


HEADLINE = (IMAGE, *(merged(s) for s in SELECTORS))
LABELS = {
    IMAGE: "Image level Φ^I",
    merged("rdn"): "+ region level, RDN boxes",
    merged("hdm"): "+ region level, HDM boxes (NightLab)",
    merged("entropy"): "+ region level, uncertain regions (training-free)",
    merged("gt"): "+ region level, all ground-truth boxes (bound)",
}
SHORT = {IMAGE: "image", merged("rdn"): "RDN", merged("hdm"): "HDM", merged("entropy"): "entropy",
         merged("gt"): "GT boxes"}
SELECTOR_LABELS = {"rdn": "RDN", "hdm": "HDM (NightLab)", "entropy": "uncertainty (training-free)",
                   "gt": "ground-truth boxes, smallest first"}


@dataclass(frozen=True)
class Claim:
    """A difference the method claims, reported with its paired-bootstrap interval: ``a - b``."""
    name: str
    a: str
    b: str
    label: str
    short: str


CLAIMS = (
    Claim("hdm_vs_image", merged("hdm"), IMAGE, "merged HDM - image level", "HDM - image"),
    Claim("hdm_vs_rdn", merged("hdm"), merged("rdn"), "merged HDM - merged RDN (same K)", "HDM - RDN"),
    Claim("hdm_vs_entropy", merged("hdm"), merged("entropy"), "merged HDM - uncertainty selector (same K)",
          "HDM - entropy"),
)
GAP_CLOSED = metric(merged(METHOD), "gap_closed")
