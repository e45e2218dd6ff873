"""Stage per_class_iou: evaluate Φ^I per class on the selection split (what the hard classes are
chosen from), and its mIoU on the report split (so that an image-level ablation, e.g.
``dvc exp run -S image_model.light_adaptation=false per_class_iou``, is measured on held-out data
without running the two-level stages)."""
from __future__ import annotations

import pandas as pd
from prefect import get_run_logger

from flows.common import StageOutputs, stage_flow, stage_main
from flows.paths import IMAGE_IOU, IMAGE_MODEL, IMAGE_REPORTS, MANIFEST, PREPARED
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.evaluation import evaluate_image_model
from nightlab.io import DataError, write_json, write_table
from nightlab.labels import CLASS_NAMES
from nightlab.metrics import headline
from nightlab.models.store import load_image_model
from nightlab.viz import plot_grouped_iou

READS = (MANIFEST, PREPARED, IMAGE_MODEL)
WRITES = (IMAGE_IOU, IMAGE_REPORTS / "per_class_iou.csv", IMAGE_REPORTS / "per_class_iou.png",
          IMAGE_REPORTS / "metrics.json")


def iou_table(result: dict) -> pd.DataFrame:
    return pd.DataFrame({"class_id": range(len(CLASS_NAMES)), "class_name": CLASS_NAMES,
                         "iou": result["iou"], "support": result["support"]})


@stage_flow("per_class_iou")
def per_class_iou(p) -> dict:
    log = get_run_logger()
    rows = p.splits.select
    where = ", ".join(map(str, rows))
    m = read_manifest(MANIFEST).select(rows)
    if len(m) == 0:
        raise DataError(f"{MANIFEST}: the selection split (splits.select = {where}) has no images")
    device = pick_device(p.device)
    model, cfg = load_image_model(IMAGE_MODEL, device)
    res = evaluate_image_model(model, m, cfg["image_scale"], device, p.image_model.window).result()
    report = read_manifest(MANIFEST).select(p.splits.report)
    held = evaluate_image_model(model, report, cfg["image_scale"], device, p.image_model.window).result()
    table = iou_table(res)
    with StageOutputs() as out:
        write_table(table, parquet=out(IMAGE_IOU), csv=out(IMAGE_REPORTS / "per_class_iou.csv"))
        write_json(out(IMAGE_REPORTS / "metrics.json"), {**headline(res, "image"), **headline(held, "image.report")})
        plot_grouped_iou(table.rename(columns={"iou": "image"}), ["image"], out(IMAGE_REPORTS / "per_class_iou.png"),
                         f"Image-level per-class IoU on {where} (mIoU {res['mIoU']:.1%})")
    log.info(f"image-level mIoU on {where}: {res['mIoU']:.4f}")
    return {"mIoU": res["mIoU"]}


if __name__ == "__main__":
    stage_main(per_class_iou, "Evaluate the image model per class on the selection split.")
