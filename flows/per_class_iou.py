"""Stage per_class_iou: evaluate Φ^I on the selection split (per-class IoU, mIoU, pixel accuracy)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from prefect import flow, get_run_logger

from flows.common import run_stage
from nightlab.config import Params
from nightlab.data.manifest import read_manifest
from nightlab.inference import image_probs
from nightlab.io import write_json, write_table
from nightlab.labels import CLASS_NAMES
from nightlab.metrics import Evaluator, metrics_to_flat
from nightlab.models.store import load_seg_model
from nightlab.train import pick_device
from nightlab.viz import plot_grouped_iou

MANIFEST = Path("data/manifest.parquet")
MODEL = Path("models/image")
REPORTS = Path("reports/image")


def evaluate_image_model(model, manifest, scale: float, device) -> Evaluator:
    ev = Evaluator()
    for i in range(len(manifest)):
        probs = image_probs(model, manifest.image(i), scale, device)
        ev.update(probs.argmax(0).cpu(), torch.from_numpy(manifest.label(i)))
    return ev


def iou_table(result: dict) -> pd.DataFrame:
    return pd.DataFrame({"class_id": range(len(CLASS_NAMES)), "class_name": CLASS_NAMES,
                         "iou": result["iou"], "support": result["support"]})


@flow(name="per_class_iou")
def per_class_iou(p: Params) -> dict:
    log = get_run_logger()
    hc = p.hard_classes
    m = read_manifest(MANIFEST).select(hc.split, hc.domain)
    if len(m) == 0:
        raise ValueError(f"{MANIFEST}: selection split {hc.split!r} (domain {hc.domain}) has no images")
    device = pick_device(p.device)
    model, cfg = load_seg_model(MODEL, device)
    res = evaluate_image_model(model, m, cfg["image_scale"], device).result()
    table = iou_table(res)
    write_table(table, parquet=REPORTS / "per_class_iou.parquet", csv=REPORTS / "per_class_iou.csv")
    write_json(REPORTS / "metrics.json", metrics_to_flat(res, "image"))
    plot_grouped_iou(table.rename(columns={"iou": "image"}), ["image"], REPORTS / "per_class_iou.png",
                     f"Image-level per-class IoU on {hc.split}/{hc.domain} (mIoU {res['mIoU']:.1%})")
    log.info(f"image-level mIoU on {hc.split}/{hc.domain}: {res['mIoU']:.4f}")
    return {"mIoU": res["mIoU"]}


if __name__ == "__main__":
    run_stage(per_class_iou, "Evaluate the image model per class on the selection split.")
