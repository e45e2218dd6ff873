"""reports/README.md in the paper's style, and the confusion-matrix figure."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nightlab.io import atomic_path
from nightlab.labels import CLASS_NAMES
from nightlab.variants import CLAIMS, GAP_CLOSED, HEADLINE, LABELS, SELECTOR_LABELS, metric
from nightlab.viz import new_figure, save_fig

ABBREV = {"road": "road", "sidewalk": "side.", "building": "build.", "wall": "wall", "fence": "fence", "pole": "pole",
          "traffic light": "light", "traffic sign": "sign", "vegetation": "veg.", "terrain": "terr.", "sky": "sky",
          "person": "pers.", "rider": "rider", "car": "car", "truck": "truck", "bus": "bus", "train": "train",
          "motorcycle": "motor.", "bicycle": "bic."}


def confusion_figure(cm: np.ndarray, path) -> None:
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = new_figure(8, 7)
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion (row-normalised), merged with HDM boxes")
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_fig(fig, path)


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}"


def k_curve_figure(curve: pd.DataFrame, k: int, path) -> None:
    """mIoU against regions per image, one line per selector (the equal-budget comparison)."""
    fig, axes = new_figure(10, 3.6)
    fig.clear()
    axes = fig.subplots(1, 2)
    for ax, col, title in ((axes[0], "mIoU", "all classes"), (axes[1], "hard_mIoU", "hard classes")):
        for name, g in curve.groupby("selector", sort=False):
            ax.plot(g.k, g[col] * 100, "o-", label=SELECTOR_LABELS.get(name, name))
        ax.axvline(k, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("regions per image (K)")
        ax.set_ylabel(f"mIoU (%), {title}")
        ax.set_xticks(sorted(curve.k.unique()))
    axes[0].legend(fontsize=8)
    fig.suptitle("Two-level mIoU at equal region budgets (dotted: the K the pipeline uses)")
    save_fig(fig, path)


def _ci(metrics: dict, name: str, prefix: str = "") -> str:
    d, lo, hi = (metrics.get(f"{name}.{prefix}{k}") for k in ("diff", "ci_low", "ci_high"))
    if d is None:
        return "-"
    verdict = "above 0" if lo is not None and lo > 0 else "below 0" if hi is not None and hi < 0 else "includes 0"
    return f"{100 * d:+.1f} [{_pct(lo)}, {_pct(hi)}] ({verdict})"


@dataclass(frozen=True)
class ReportSplit:
    """Where the numbers of a report come from: the report split's selectors (text), whether it is
    disjoint from the selection split, and the regions per image of the headline (K)."""
    rows: str
    held_out: bool
    k: int


def paper_tables(path, table: pd.DataFrame, metrics: dict, curve: pd.DataFrame, hard_info: dict,
                 stage_metrics: dict, split: ReportSplit) -> None:
    """reports/README.md: headline with intervals, per-class table, equal-budget curves, detectors.

    ``stage_metrics`` holds the rdn, hdm and region stages' metrics.
    """
    report_rows, held_out, k = split.rows, split.held_out, split.k
    hard = set(hard_info["names"])
    n = metrics.get("report.images")
    protocol = ("held out: no image of it was used to choose anything" if held_out else
                "**not held out**: the hard classes and settings were chosen on these same images (as the "
                "paper's Table 1 does on NightCity+ val)")
    selected_on = ", ".join(hard_info.get("selected_on", [])) or "the selection split"
    lines = ["# Results", "",
             f"Report split `{report_rows}`, {n} images, {protocol}. Native label resolution; IoU in %. Hard classes "
             f"(image-level IoU < {hard_info['threshold']} on `{selected_on}`): "
             f"{', '.join(hard_info['names']) or 'none'}. Two-level variants merge the top K = {k} regions per image "
             "of each selector.", "",
             "## Headline", "",
             "| Variant | mIoU | hard-class mIoU | regions / image |", "|---|---|---|---|"]
    for v, label in ((v, LABELS[v]) for v in HEADLINE):
        lines.append(f"| {label} | {_pct(metrics.get(metric(v)))} | {_pct(metrics.get(metric(v, 'hard_mIoU')))} | "
                     f"{_num(metrics.get(metric(v, 'regions_per_image')))} |")
    lines += ["", "Differences, with paired per-image bootstrap 95% intervals "
              f"({stage_note(metrics)}; they cover the sampling of report images, not training noise: "
              "see the seed study, [seeds/seeds.md](seeds/seeds.md), and what was chosen on val, "
              "[decisions.md](decisions.md)):", "",
              "| Difference | mIoU | hard-class mIoU |", "|---|---|---|"]
    for claim in CLAIMS:
        lines.append(f"| {claim.label} | {_ci(metrics, claim.name)} | {_ci(metrics, claim.name, 'hard_')} |")
    closed = metrics.get(GAP_CLOSED)
    lines += ["", f"Merged HDM closes {_pct(closed)}% of the gap between the image level and the ground-truth-box "
              "bound." if closed is not None else ""]
    head = [f"**{ABBREV[c]}**\\*" if c in hard else ABBREV[c] for c in table.class_name]
    lines += ["", "## Per-class IoU (hard classes marked \\*)", "",
              "| Method | " + " | ".join(head) + " | mIoU |", "|---|" + "---|" * (len(head) + 1)]
    for v, label in ((v, LABELS[v]) for v in HEADLINE):
        total = _pct(metrics.get(metric(v)))
        lines.append(f"| {label} | " + " | ".join(_pct(x) for x in table[v]) + f" | **{total}** |")
    lines += ["", "## Equal region budgets", "",
              "Each selector's top K regions per image (detectors: after NMS, no score threshold). *Covered*: share "
              "of the report split's hard boxes where zooming helps (eq. 1 on the ground-truth box) that one of the "
              "K regions matches (IoU >= 0.5).", "",
              "| Selector | K | mIoU | hard-class mIoU | covered |", "|---|---|---|---|---|"]
    for r in curve.itertuples():
        name = SELECTOR_LABELS.get(r.selector, r.selector)
        lines.append(f"| {name} | {r.k} | {_pct(r.mIoU)} | {_pct(r.hard_mIoU)} | {_pct(r.helpful_covered)} |")
    lines += ["", "![mIoU against regions per image](merged/k_curve.png)", ""]
    hdm, region = stage_metrics.get("hdm") or {}, stage_metrics.get("region") or {}
    lines += ["## Region detection", "",
              f"Recall of the report split's hard boxes (IoU >= 0.5) by the top 100 proposals: RDN "
              f"{_pct(metrics.get('rdn.recall_100'))}%, HDM {_pct(metrics.get('hdm.recall_100'))}%."]
    if hdm:
        lines += ["", "On the selection split (where HDM's settings were chosen):", "",
                  "| Detector | recall@10 | recall@50 | recall@100 | crop-IoU gain, top-10 proposals |",
                  "|---|---|---|---|---|"]
        for name in ("rdn", "hdm"):
            r = [hdm.get(f"hdm.val.{name}.recall_{kk}") for kk in (10, 50, 100)]
            lines.append(f"| {name.upper()} | " + " | ".join(_pct(x) for x in r)
                         + f" | {_pct(hdm.get(f'hdm.val.{name}.crop_gain_top10'))} |")
        lines += ["", f"HDM kept {hdm.get('hdm.kept')} of {hdm.get('hdm.positives')} originally positive training "
                  f"proposals ({_pct(hdm.get('hdm.kept_share'))}%); {hdm.get('hdm.hard_boxes_kept')} of "
                  f"{hdm.get('hdm.hard_boxes')} training hard boxes stay positive. Mean crop-IoU gain over all RDN "
                  f"proposals on the training images: {_pct(hdm.get('hdm.train.crop_gain_all'))}."]
    if region:
        lines += ["", f"Inside the selection split's hard-box crops: region model mIoU "
                  f"{_pct(region.get('region.crops.mIoU'))} vs image model {_pct(region.get('image.crops.mIoU'))} on "
                  f"{region.get('region.crops.count')} crops ([figure](region/crop_iou.png))."]
    lines += ["", "## Figures", "", "![per-class IoU](merged/per_class_iou.png)", "",
              "Qualitative: image, labels, image level, merged (HDM), HDM boxes on the merged overlay.", "",
              "![panel](merged/panel.png)", "", "![confusion](merged/confusion_hdm.png)", "",
              "## Experiments", "",
              "Run as `dvc exp` against this run, each naming the revision and dvc.lock it was made from "
              "(`nightlab report status` marks the stale ones): what was chosen on val and why, "
              "[decisions.md](decisions.md); the threshold sweep (supplement Table 1), "
              "[sweep/threshold_sweep.md](sweep/threshold_sweep.md); training seeds, [seeds/seeds.md](seeds/seeds.md); "
              "light adaptation, night-aware loss and the full-resolution image model, "
              "[ablations/ablations.md](ablations/ablations.md).", ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))


def _num(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def stage_note(metrics: dict) -> str:
    return f"{metrics.get('report.images')} images resampled"
