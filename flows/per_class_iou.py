"""Stage per_class_iou: evaluate Φ^I per class on the selection split (what the hard classes are
chosen from), and its mIoU on the report split (so that an image-level ablation, e.g.
``dvc exp run -S image_model.light_adaptation=false per_class_iou``, is measured on held-out data
without running the two-level stages)."""
from __future__ import annotations

import pandas as pd
from prefect import get_run_logger

from flows.common import StageOutputs, stage_flow, stage_main
from flows.declare import metric, out, plot
from flows.paths import IMAGE_IOU, IMAGE_METRICS, IMAGE_MODEL, IMAGE_REPORTS, MANIFEST, PREPARED
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.evaluation import evaluate_image_model
from nightlab.io import DataError, write_json, write_table
from nightlab.labels import CLASS_NAMES
from nightlab.metrics import headline
from nightlab.trained import TrainedModels
from nightlab.viz import plot_grouped_iou

READS = (MANIFEST, PREPARED, IMAGE_MODEL)
WRITES = (out(IMAGE_IOU, cache=True), IMAGE_REPORTS / "per_class_iou.csv", plot(IMAGE_REPORTS / "per_class_iou.png"),
          metric(IMAGE_METRICS))
PARAMS = ("device", "splits.select", "splits.report", "image_model.window")


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
    models = TrainedModels.load(IMAGE_MODEL, pick_device(p.device), p.image_model.window)
    res = evaluate_image_model(models, m, "image level, selection split").result()
    report = read_manifest(MANIFEST).select(p.splits.report)
    held = evaluate_image_model(models, report, "image level, report split").result()
    table = iou_table(res)
    with StageOutputs() as out:
        write_table(table, parquet=out(IMAGE_IOU), csv=out(IMAGE_REPORTS / "per_class_iou.csv"))
        write_json(out(IMAGE_METRICS), {**headline(res, "image"), **headline(held, "image.report")})
        plot_grouped_iou(table.rename(columns={"iou": "image"}), ["image"], out(IMAGE_REPORTS / "per_class_iou.png"),
                         f"Image-level per-class IoU on {where} (mIoU {res['mIoU']:.1%})")
    log.info(f"image-level mIoU on {where}: {res['mIoU']:.4f}")
    return {"mIoU": res["mIoU"]}


if __name__ == "__main__":
    stage_main(per_class_iou, "Evaluate the image model per class on the selection split.")
