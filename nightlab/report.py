"""reports/README.md in the paper's style, and the confusion-matrix figure."""
from __future__ import annotations

import numpy as np
import pandas as pd

from nightlab.io import atomic_path
from nightlab.labels import CLASS_NAMES
from nightlab.viz import new_figure, save_fig

ABBREV = {"road": "road", "sidewalk": "side.", "building": "build.", "wall": "wall", "fence": "fence", "pole": "pole",
          "traffic light": "light", "traffic sign": "sign", "vegetation": "veg.", "terrain": "terr.", "sky": "sky",
          "person": "pers.", "rider": "rider", "car": "car", "truck": "truck", "bus": "bus", "train": "train",
          "motorcycle": "motor.", "bicycle": "bic."}
ROWS = {"image": "Image level Φ^I", "merged_rdn": "+ region level, RDN boxes",
        "merged_hdm": "+ region level, HDM boxes (NightLab)", "merged_gt": "+ region level, ground-truth boxes (bound)"}


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


def paper_tables(path, table: pd.DataFrame, results: dict, hard_info: dict, metrics: dict, stage_metrics: dict,
                 report_rows: str, held_out: bool) -> None:
    """reports/README.md: the per-class table, the ablation and the detector comparison.

    ``stage_metrics`` holds the rdn, hdm and region stages' metrics (dicts); ``report_rows`` names the
    report split; ``held_out`` says whether it is disjoint from the selection split.
    """
    hard = set(hard_info["names"])
    head = [f"**{ABBREV[c]}**\\*" if c in hard else ABBREV[c] for c in table.class_name]
    protocol = ("held out from the selection split" if held_out else
                "the same rows the hard classes were selected on (not held out, as in the paper's Table 1)")
    selected_on = ", ".join(hard_info.get("selected_on", [])) or "the selection split"
    lines = ["# Results", "",
             f"Evaluated on `{report_rows}` ({protocol}) at native label resolution; IoU in %. Hard classes "
             f"(IoU < {hard_info['threshold']} for the image model on `{selected_on}`), marked \\*: "
             f"{', '.join(hard_info['names']) or 'none'}.", "",
             "## Per-class IoU", "",
             "| Method | " + " | ".join(head) + " | mIoU |", "|---|" + "---|" * (len(head) + 1)]
    for v, label in ROWS.items():
        lines.append(f"| {label} | " + " | ".join(_pct(x) for x in table[v]) + f" | **{_pct(results[v]['mIoU'])}** |")
    hard_rows = table[table.hard]
    lines += ["", "## Ablation (mean IoU over all classes, and over the hard classes)", "",
              "| Method | mIoU | hard-class mIoU | regions / image |", "|---|---|---|---|"]
    for v, label in ROWS.items():
        hm = float(np.nanmean(hard_rows[v])) if len(hard_rows) else float("nan")
        per_image = metrics.get(f"{v}.regions_per_image", "-")
        lines.append(f"| {label} | {_pct(results[v]['mIoU'])} | {_pct(hm)} | {per_image} |")
    hdm, region = stage_metrics.get("hdm") or {}, stage_metrics.get("region") or {}
    if hdm:
        lines += ["", "## Region detection: RDN vs HDM (hard ground-truth boxes, IoU >= 0.5)", "",
                  "| Detector | recall@10 | recall@50 | recall@100 | crop-IoU gain of Φ^R over Φ^I, top-10 proposals |",
                  "|---|---|---|---|---|"]
        for name in ("rdn", "hdm"):
            r = [hdm.get(f"hdm.val.{name}.recall_{k}") for k in (10, 50, 100)]
            lines.append(f"| {name.upper()} | " + " | ".join(_pct(x) for x in r)
                         + f" | {_pct(hdm.get(f'hdm.val.{name}.crop_gain_top10'))} |")
        lines += ["", f"HDM kept {hdm.get('hdm.kept')} of {hdm.get('hdm.positives')} originally positive training "
                  f"proposals ({_pct(hdm.get('hdm.kept_share'))}%); mean crop-IoU gain on kept proposals "
                  f"{_pct(hdm.get('hdm.train.crop_gain_kept'))} vs {_pct(hdm.get('hdm.train.crop_gain_all'))} on all "
                  f"RDN proposals. Relabel speed: {hdm.get('hdm.relabel_proposals_per_s')} proposals/s."]
    if region:
        lines += ["", f"Inside hard-region crops: region model mIoU {_pct(region.get('region.crops.mIoU'))} vs image "
                  f"model {_pct(region.get('image.crops.mIoU'))} on {region.get('region.crops.count')} crops "
                  "([figure](region/crop_iou.png))."]
    lines += ["", "## Figures", "", "![per-class IoU](merged/per_class_iou.png)", "",
              "Qualitative: image, labels, image level, merged (HDM), HDM boxes on the merged overlay.", "",
              "![panel](merged/panel.png)", "", "![confusion](merged/confusion_hdm.png)", ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
