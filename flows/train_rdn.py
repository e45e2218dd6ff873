"""Stage train_rdn: the region detection network on context boxes of hard classes (docs/design.md 1.4).

With ``rdn.backbone: shared`` the RPN sits on the trained image model's frozen backbone (read
from models/image, a dep of the stage in every setting: DVC deps cannot depend on a param).
Reports the recall of ground-truth hard boxes (IoU >= 0.5) by the top 10/50/100 proposals on
the selection split, the figure HDM is later compared against.
"""
from __future__ import annotations

import numpy as np
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
    RDN_MODEL,
    RDN_REPORTS,
    compute_file,
)
from nightlab.boxes import boxes_for
from nightlab.compute import training_record
from nightlab.data.dataset import DetectionDataset
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.errors import ConfigError
from nightlab.evaluation import proposal_recall
from nightlab.hard import read_hard_classes
from nightlab.io import read_table, write_json, write_table
from nightlab.models.rdn import SHARED, auto_anchor_sizes, build_rdn, rdn_config, rpn_loss
from nightlab.models.segnet import SegModel
from nightlab.models.store import load_image_model, save_model
from nightlab.train import Run, fit, seed_everything
from nightlab.trained import Detector
from nightlab.viz import plot_curve

READS = (MANIFEST, PREPARED, BOXES, HARD_SET, IMAGE_MODEL)
WRITES = (RDN_MODEL, metric(RDN_REPORTS / "metrics.json"), RDN_REPORTS / "train_curve.csv",
          plot(RDN_REPORTS / "train_curve.png"),
          compute_file("train_rdn"))
PARAMS = ("seed", "device", "splits.train", "splits.select", "rdn")
CKPT = CHECKPOINTS / "rdn"
# models/image gives the shared backbone's weights: the stage never runs image-model inference, so
# the inference-only image_model keys (the sliding window) are not its params.
IMAGE_MODEL_WEIGHTS_ONLY = True


@stage_flow("train_rdn")
def train_rdn(p) -> dict:
    log = get_run_logger()
    cfg = p.rdn
    seed_everything(p.seed)
    hard = read_hard_classes(HARD_SET)
    full, boxes = read_manifest(MANIFEST), read_table(BOXES)
    train = full.select(p.splits.train, cfg.train.domains)
    train_boxes = boxes_for(boxes, train, hard)
    sides = np.sqrt((train_boxes.x1 - train_boxes.x0) * (train_boxes.y1 - train_boxes.y0)).to_numpy() * cfg.image_scale
    anchors = auto_anchor_sizes(sides) if cfg.anchor_sizes == "auto" else cfg.anchor_sizes
    image_model, icfg = (None, None)
    if cfg.backbone == SHARED:
        image_model, icfg = load_image_model(IMAGE_MODEL)
        if not isinstance(image_model, SegModel):
            raise ConfigError(f"rdn.backbone: shared: {IMAGE_MODEL} holds a TorchScript model (image_model.external), "
                              "whose features the RDN cannot use; set rdn.backbone to a timm model name")
    model = build_rdn(cfg, anchors, image_model)
    device = pick_device(p.device)
    log.info(f"RDN on {len(train)} images, {len(train_boxes)} hard boxes, anchors {anchors}")
    ds = DetectionDataset(train, train_boxes, cfg.image_scale, train=True, hflip=cfg.train.hflip, seed=p.seed,
                          cache_mb=cfg.train.cache_mb)
    key = {**params_of(p, "seed", "splits.train", "rdn"), "hard": hard, "inputs": stage_inputs("train_rdn")}
    curve = fit(model, ds, rpn_loss, cfg.train, Run(CKPT, p.seed, device, key, "rdn", optimizer="sgd"))
    sel = full.select(p.splits.select)
    sel_boxes = boxes_for(boxes, sel, hard)
    recall = proposal_recall(Detector(model, cfg.image_scale), sel, sel_boxes, device)
    metrics = {f"rdn.recall_{k}": round(v, 6) if v == v else None for k, v in recall.items()}
    metrics["rdn.hard_boxes_val"] = int(len(sel_boxes))
    with StageOutputs() as out:
        save_model(out(RDN_MODEL, directory=True), model, rdn_config(cfg, anchors, icfg))
        write_table(curve, csv=out(RDN_REPORTS / "train_curve.csv"))
        plot_curve(curve, out(RDN_REPORTS / "train_curve.png"), f"RDN ({cfg.backbone}): RPN training loss")
        write_json(out(compute_file("train_rdn")), training_record(curve.attrs["step_flops"], cfg.train.iters))
        write_json(out(RDN_REPORTS / "metrics.json"), metrics)
    log.info(f"RDN recall on {', '.join(map(str, p.splits.select))}: {metrics}")
    return metrics


if __name__ == "__main__":
    stage_main(train_rdn, "Train the region detection network on hard-class context boxes.")
