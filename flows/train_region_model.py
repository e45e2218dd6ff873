"""Stage train_region_model: Φ^R on zoomed views of hard-region context boxes (docs/design.md 1.5).

It starts from the image model's weights (``region_model.init: image``) or from scratch, trains on
the ground-truth boxes and jittered, proposal-like copies of them, and with ``prior: image`` refines
the image model's prediction of each view. Evaluated on the selection split's hard boxes: per-class
IoU of the region model on the crops, beside the image model's prediction cut to the same crops
(both at native crop resolution), and how much the views zoom in (their scale against the image
model's, the share upsampled beyond native).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger

from flows.common import StageOutputs, params_of, stage_flow, stage_inputs, stage_main
from flows.declare import metric, plot
from flows.paths import (
    BOXES,
    CHECKPOINTS,
    HARD_SET,
    IMAGE_MODEL,
    MANIFEST,
    PREPARED,
    REGION_MODEL,
    REGION_REPORTS,
    compute_file,
)
from flows.training import fit_seg_model
from nightlab.boxes import boxes_for, proposal_like
from nightlab.data.dataset import RegionDataset, ViewAugment
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.distributed import launch
from nightlab.errors import ConfigError
from nightlab.evaluation import evaluate_on_crops
from nightlab.hard import read_hard_classes
from nightlab.headline import rounded
from nightlab.io import read_table, write_json, write_table
from nightlab.labels import CLASS_NAMES
from nightlab.metrics import headline, subset_miou
from nightlab.models.segnet import SegModel, segmentation_net
from nightlab.regions import CropRule, views
from nightlab.trained import TrainedModels
from nightlab.viz import plot_curve, plot_grouped_iou

READS = (MANIFEST, PREPARED, BOXES, HARD_SET, IMAGE_MODEL)
WRITES = (REGION_MODEL, plot(REGION_REPORTS / "crop_iou.png"), metric(REGION_REPORTS / "metrics.json"),
          REGION_REPORTS / "train_curve.csv", plot(REGION_REPORTS / "train_curve.png"), REGION_REPORTS / "crop_iou.csv",
          compute_file("train_region_model"))
PARAMS = ("seed", "device", "splits.train", "splits.select", "region_model", "merge.batch_size", "distributed",
          "image_model.window", "data.synthetic", "data.sources")  # the data two: saved with the model
CKPT = CHECKPOINTS / "region"


def train(p, model_dir: Path, curve_csv: Path) -> dict:
    """Fit the region model on views of the hard-class boxes; runs in each training process
    (nightlab.distributed). Rank 0 writes the model and its curve to the (staged) paths it is given."""
    cfg = p.region_model
    hard = read_hard_classes(HARD_SET)
    image = {}  # the trained image model, when the region model starts from it or refines it

    def dataset(device):
        train_set = read_manifest(MANIFEST).select(p.splits.train, cfg.train.domains)
        train_boxes = training_boxes(cfg, train_set, boxes_for(read_table(BOXES), train_set, hard), p.seed)
        if not len(train_boxes):
            return None
        if cfg.init == "image" or cfg.prior == "image":
            # the window too: the prior a view is trained with is the one inference will cut it from
            image["models"] = TrainedModels.load(IMAGE_MODEL, device, p.image_model.window)
            if cfg.init == "image" and not isinstance(image["models"].image, SegModel):
                raise ConfigError(f"region_model.init: image: {IMAGE_MODEL} holds a TorchScript model "
                                  "(image_model.external), whose weights the region model cannot start from: "
                                  "set region_model.init: scratch (its logits still serve as the prior)")
        prior = image_logits_of(image["models"], train_set, train_boxes) if cfg.prior == "image" else None
        return RegionDataset(train_set, train_boxes, CropRule.of(cfg), train=True,
                             augment=ViewAugment(cfg.jitter, cfg.train.hflip, cfg.prior_noise), seed=p.seed,
                             cache_mb=cfg.train.cache_mb, prior=prior)

    def start_from_image(model):
        if cfg.init == "image" and "models" in image:  # (nothing to train on: the model stays as built)
            segmentation_net(model).load_state_dict(image["models"].image.state_dict())

    key = {**params_of(p, "seed", "splits.train", "region_model", "distributed"), "hard": hard,
           "inputs": stage_inputs("train_region_model")}
    return fit_seg_model(p, cfg, dataset, CKPT, key, (model_dir, curve_csv), "region model", start_from_image)


def training_boxes(cfg, train_set, gt, seed: int):
    """The ground-truth boxes and ``cfg.proposal_like`` jittered copies of each (nightlab.boxes.proposal_like)."""
    sizes = dict(zip(range(len(train_set)), zip(train_set.df.height.astype(int), train_set.df.width.astype(int))))
    return proposal_like(gt, cfg.proposal_like, cfg.proposal_jitter, seed, sizes)


def image_logits_of(models: TrainedModels, train_set, boxes) -> dict:
    """The image model's logits (C, h, w, float16) of every training image that has a box: the prior a
    refining region model is trained with, computed once."""
    out = {}
    for s in sorted(set(boxes["sample"].astype(int))):
        out[s] = models.image_logits(train_set.image(s))[0].half().cpu()
    return out


@stage_flow("train_region_model")
def train_region_model(p) -> dict:
    log = get_run_logger()
    cfg = p.region_model
    hard = read_hard_classes(HARD_SET)
    log.info(f"region model for hard classes {hard}, {cfg.crop} windows of {cfg.region_size}, "
             f"{p.distributed.nnodes} x {p.distributed.nproc_per_node} process(es)")
    with StageOutputs() as out:
        model_dir = out(REGION_MODEL, directory=True)
        trained = launch(train, p, model_dir, out(REGION_REPORTS / "train_curve.csv"), cfg=p.distributed)
        write_json(out(compute_file("train_region_model")), trained["compute"])
        plot_curve(pd.read_csv(out(REGION_REPORTS / "train_curve.csv")), out(REGION_REPORTS / "train_curve.png"),
                   f"Region model Φ^R ({cfg.backbone}, {cfg.region_size} px views): training loss")
        crops = trained["samples"]
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
               "region.crops.hard_mIoU": rounded(subset_miou(res_r["iou"], hard)),
               "image.crops.hard_mIoU": rounded(subset_miou(res_i["iou"], hard)),
               "region.crops.count": int(len(val_boxes)),
               **view_stats(full.select(p.splits.train, p.region_model.train.domains), boxes, hard, models)}
    write_json(out(REGION_REPORTS / "metrics.json"), metrics)
    log.info(f"crops mIoU: region {res_r['mIoU']:.4f} vs image {res_i['mIoU']:.4f} on {len(val_boxes)} crops")
    return metrics


def view_stats(train_set, boxes, hard, models: TrainedModels) -> dict:
    """How much the views of the training hard boxes zoom in: their scale against the image model's
    (median, 10th and 90th percentile), the share shown beyond native resolution, views per box."""
    gt = boxes_for(boxes, train_set, hard)
    hw = list(zip(train_set.df.height.astype(int), train_set.df.width.astype(int)))
    scales = np.array([v.scale for r in gt.itertuples() for v in views((r.x0, r.y0, r.x1, r.y1), *hw[int(r.sample)],
                                                                        models.rule)])
    if not len(scales):
        return {}
    rel = scales / models.image_scale
    return {"region.views.vs_image.median": round(float(np.median(rel)), 4),
            "region.views.vs_image.p10": round(float(np.percentile(rel, 10)), 4),
            "region.views.vs_image.p90": round(float(np.percentile(rel, 90)), 4),
            "region.views.beyond_native": round(float((scales > 1.0 + 1e-9).mean()), 4),
            "region.views.per_box": round(len(scales) / len(gt), 4)}


if __name__ == "__main__":
    stage_main(train_region_model, "Train the region-level model on zoomed hard-region crops.")
