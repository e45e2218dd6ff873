"""Stage train_region_model: Φ^R on zoomed crops of hard-region context boxes (docs/design.md 1.5).

Evaluated on the selection split's hard boxes: per-class IoU of the region model on the crops,
beside the image model's prediction cut to the same crops (both at native crop resolution).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger

from flows.common import StageOutputs, params_of, stage_flow, stage_inputs, stage_main
from flows.declare import metric, plot
from flows.paths import BOXES, CHECKPOINTS, HARD_SET, IMAGE_MODEL, MANIFEST, PREPARED, REGION_MODEL, REGION_REPORTS
from flows.training import fit_seg_model
from nightlab.boxes import boxes_for
from nightlab.data.dataset import RegionDataset
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.distributed import launch
from nightlab.evaluation import evaluate_on_crops
from nightlab.hard import read_hard_classes
from nightlab.io import read_table, write_json, write_table
from nightlab.labels import CLASS_NAMES
from nightlab.metrics import headline
from nightlab.regions import CropRule
from nightlab.trained import TrainedModels
from nightlab.viz import plot_grouped_iou

READS = (MANIFEST, PREPARED, BOXES, HARD_SET, IMAGE_MODEL)
WRITES = (REGION_MODEL, REGION_REPORTS / "crop_iou.png", metric(REGION_REPORTS / "metrics.json"),
          plot(REGION_REPORTS / "train_curve.csv", x="iter", y="loss"),
          plot(REGION_REPORTS / "crop_iou.csv", template="bar_horizontal", x="region", y="class_name"))
PARAMS = ("seed", "device", "splits.train", "splits.select", "region_model", "merge.batch_size", "distributed",
          "image_model.window")
CKPT = CHECKPOINTS / "region"


def train(p, model_dir: Path, curve_csv: Path) -> dict:
    """Fit the region model on views of the hard-class boxes; runs in each training process
    (nightlab.distributed). Rank 0 writes the model and its curve to the (staged) paths it is given."""
    cfg = p.region_model
    hard = read_hard_classes(HARD_SET)

    def dataset():
        train_set = read_manifest(MANIFEST).select(p.splits.train, cfg.train.domains)
        train_boxes = boxes_for(read_table(BOXES), train_set, hard)
        if not len(train_boxes):
            return None
        return RegionDataset(train_set, train_boxes, CropRule.of(cfg), train=True, jitter=cfg.jitter,
                             hflip=cfg.train.hflip, seed=p.seed, cache_mb=cfg.train.cache_mb)

    key = {**params_of(p, "seed", "splits.train", "region_model", "distributed"), "hard": hard,
           "inputs": stage_inputs("train_region_model")}
    return fit_seg_model(p, cfg, dataset, CKPT, key, (model_dir, curve_csv), "region model")


@stage_flow("train_region_model")
def train_region_model(p) -> dict:
    log = get_run_logger()
    cfg = p.region_model
    hard = read_hard_classes(HARD_SET)
    log.info(f"region model for hard classes {hard}, {cfg.crop} windows of {cfg.region_size}, "
             f"{p.distributed.nnodes} x {p.distributed.nproc_per_node} process(es)")
    with StageOutputs() as out:
        model_dir = out(REGION_MODEL, directory=True)
        crops = launch(train, p, model_dir, out(REGION_REPORTS / "train_curve.csv"), cfg=p.distributed)["samples"]
        if crops == 0:
            log.warning("no hard-class boxes to train on: saved the untrained region model (merging changes nothing)")
        else:
            log.info(f"trained on {crops} windows")
        return _evaluate(p, model_dir, hard, out, log)


def _evaluate(p, model_dir: Path, hard: list[int], out: StageOutputs, log) -> dict:
    """Per-class IoU inside the selection split's hard-box crops: region model vs image model."""
    full, boxes = read_manifest(MANIFEST), read_table(BOXES)
    # What rank 0 saved (model_dir): the same weights however it was trained.
    models = TrainedModels.load(IMAGE_MODEL, pick_device(p.device), p.image_model.window, model_dir)
    sel = full.select(p.splits.select)
    val_boxes = boxes_for(boxes, sel, hard)
    res_r, res_i = evaluate_on_crops(models, sel, val_boxes, p.merge.batch_size)
    table = pd.DataFrame({"class_name": CLASS_NAMES, "region": res_r["iou"], "image_on_crops": res_i["iou"]})
    write_table(table, csv=out(REGION_REPORTS / "crop_iou.csv"))
    plot_grouped_iou(table, ["image_on_crops", "region"], out(REGION_REPORTS / "crop_iou.png"),
                     "Per-class IoU inside hard-region crops", highlight=[CLASS_NAMES[c] for c in hard])
    metrics = {**headline(res_r, "region.crops"), **headline(res_i, "image.crops"),
               "region.crops.count": int(len(val_boxes))}
    write_json(out(REGION_REPORTS / "metrics.json"), metrics)
    log.info(f"crops mIoU: region {res_r['mIoU']:.4f} vs image {res_i['mIoU']:.4f} on {len(val_boxes)} crops")
    return metrics


if __name__ == "__main__":
    stage_main(train_region_model, "Train the region-level model on zoomed hard-region crops.")
