"""Stage evaluate_merged: image-level vs merged with RDN, HDM and ground-truth boxes (docs/design.md 1.8).

All four variants share one image-model pass per image. Writes the flat metrics for
``dvc metrics``, a per-class table for ``dvc plots``, the confusion matrix of merged_hdm, a
qualitative panel and reports/README.md with the tables in the paper's style.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from prefect import get_run_logger

from flows.common import StageOutputs, stage_flow, stage_main
from flows.paths import (
    BOXES,
    HARD_CLASSES,
    HARD_SET,
    HDM_MODEL,
    HDM_REPORTS,
    IMAGE_MODEL,
    MANIFEST,
    MERGED_REPORTS,
    METRICS,
    PREPARED,
    RDN_MODEL,
    RDN_REPORTS,
    REGION_MODEL,
    REGION_REPORTS,
    REPORTS,
)
from nightlab.boxes import boxes_for
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.inference import image_probs
from nightlab.io import read_json, read_table, write_json, write_table
from nightlab.labels import CLASS_NAMES
from nightlab.metrics import Evaluator, subset_miou
from nightlab.predict import TwoLevel
from nightlab.report import confusion_figure, paper_tables
from nightlab.viz import draw_boxes, overlay, plot_grouped_iou, save_grid

READS = (MANIFEST, PREPARED, BOXES, HARD_CLASSES, HARD_SET, IMAGE_MODEL, REGION_MODEL, RDN_MODEL, HDM_MODEL,
         RDN_REPORTS / "metrics.json", REGION_REPORTS / "metrics.json", HDM_REPORTS / "metrics.json")
WRITES = (METRICS, REPORTS / "README.md", MERGED_REPORTS / "panel.png", MERGED_REPORTS / "per_class_iou.png",
          MERGED_REPORTS / "per_class_iou.csv", MERGED_REPORTS / "confusion_hdm.png",
          MERGED_REPORTS / "confusion_hdm.csv")
VARIANTS = ["image", "merged_rdn", "merged_hdm", "merged_gt"]


def _r(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


@stage_flow("evaluate_merged")
def evaluate_merged(p) -> dict:
    log = get_run_logger()
    device = pick_device(p.device)
    hard_info = read_json(HARD_CLASSES)
    where = ", ".join(map(str, p.splits.report))
    full = read_manifest(MANIFEST)
    sel = full.select(p.splits.report)
    held_out = not set(sel.df.row) & set(full.select(p.splits.select).df.row)
    gt_boxes = boxes_for(read_table(BOXES), sel, hard_info["ids"])
    hdm = TwoLevel.from_params(p.merge, "hdm", IMAGE_MODEL.parent, HARD_SET, device)
    rdn = TwoLevel.from_params(p.merge, "rdn", IMAGE_MODEL.parent, HARD_SET, device)
    evs = {v: Evaluator() for v in VARIANTS}
    regions = dict.fromkeys(VARIANTS, 0)
    panel = []
    for i in range(len(sel)):
        img, lab = sel.image(i), torch.from_numpy(sel.label(i))
        probs = image_probs(hdm.image_model, img, hdm.image_scale, device)
        boxes = {"image": np.zeros((0, 4)), "merged_rdn": rdn.regions(img), "merged_hdm": hdm.regions(img),
                 "merged_gt": gt_boxes[gt_boxes["sample"] == i][["x0", "y0", "x1", "y1"]].to_numpy()}
        preds = {}
        for v in VARIANTS:
            preds[v] = hdm.merge_with(img, probs, boxes[v]).cpu()
            evs[v].update(preds[v], lab)
            regions[v] += len(boxes[v])
        if i < p.merge.panel_images:
            shown = lab.numpy().copy()
            panel.append([img, shown, preds["image"].byte().numpy(), preds["merged_hdm"].byte().numpy(),
                          draw_boxes(overlay(img, preds["merged_hdm"].byte().numpy()), boxes["merged_hdm"])])

    results = {v: evs[v].result() for v in VARIANTS}
    hard_ids = hard_info["ids"]
    # Headline numbers only (dvc metrics diff stays readable); per-class IoU goes to the table below.
    metrics = {}
    for v in VARIANTS:
        metrics[f"{v}.mIoU"] = _r(results[v]["mIoU"])
        metrics[f"{v}.hard_mIoU"] = _r(subset_miou(results[v]["iou"], hard_ids))
        metrics[f"{v}.regions_per_image"] = round(regions[v] / max(len(sel), 1), 3)
    metrics["merged_hdm.gain_mIoU"] = _r(results["merged_hdm"]["mIoU"] - results["image"]["mIoU"])
    metrics["hard_classes.count"] = len(hard_ids)

    table = pd.DataFrame({"class_name": CLASS_NAMES, "hard": [c in hard_ids for c in range(len(CLASS_NAMES))],
                          **{v: results[v]["iou"] for v in VARIANTS}})
    stage_metrics = {"rdn": read_json(RDN_REPORTS / "metrics.json"), "hdm": read_json(HDM_REPORTS / "metrics.json"),
                     "region": read_json(REGION_REPORTS / "metrics.json")}
    cm = evs["merged_hdm"].confusion.numpy()
    with StageOutputs() as out:
        write_json(out(METRICS), metrics)
        write_table(table, csv=out(MERGED_REPORTS / "per_class_iou.csv"))
        plot_grouped_iou(table, VARIANTS, out(MERGED_REPORTS / "per_class_iou.png"),
                         f"Per-class IoU on {where} (hard classes in red)", highlight=hard_info["names"])
        write_table(pd.DataFrame(cm, columns=CLASS_NAMES).assign(gt=CLASS_NAMES),
                    csv=out(MERGED_REPORTS / "confusion_hdm.csv"))
        confusion_figure(cm, out(MERGED_REPORTS / "confusion_hdm.png"))
        save_grid(out(MERGED_REPORTS / "panel.png"), panel or [[np.zeros((8, 8, 3), np.uint8)]], height=160)
        paper_tables(out(REPORTS / "README.md"), table, results, hard_info, metrics, stage_metrics, where, held_out)
    log.info("mIoU: " + ", ".join(f"{v} {results[v]['mIoU']:.4f}" for v in VARIANTS))
    return metrics


if __name__ == "__main__":
    stage_main(evaluate_merged, "Evaluate image-level and merged predictions; write reports.")
