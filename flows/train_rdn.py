"""Stage train_rdn: the region detection network on context boxes of hard classes (DESIGN 1.4).

Reports the recall of ground-truth hard boxes (IoU >= 0.5) by the top 10/50/100 proposals on
the selection split, the figure HDM is later compared against.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from prefect import flow, get_run_logger

from flows.common import params_of, run_stage, stage_inputs
from nightlab.boxes import boxes_for, recall_at_k
from nightlab.config import Params
from nightlab.data.dataset import DetectionDataset, detection_collate
from nightlab.data.manifest import read_manifest
from nightlab.hard import read_hard_classes
from nightlab.inference import propose
from nightlab.io import read_table, write_json, write_table
from nightlab.models.rdn import auto_anchor_sizes, build_rdn, rdn_config
from nightlab.models.store import save_model
from nightlab.train import fit, pick_device, seed_everything

MANIFEST = Path("data/manifest.parquet")
BOXES = Path("data/boxes.parquet")
HARD = Path("reports/hard_classes.json")
OUT = Path("models/rdn")
CKPT = Path("checkpoints/rdn")
REPORTS = Path("reports/rdn")
KS = (10, 50, 100)


def rpn_loss(model, x, targets):
    return sum(model(x, targets)[2].values())


def proposal_recall(rdn, manifest, gt, scale, device) -> dict:
    """Recall at K of the ground-truth boxes ``gt`` (sample, x0..y1) on every image of ``manifest``."""
    rdn.eval()
    props = propose(rdn, [manifest.image(i) for i in range(len(manifest))], scale, device)
    gts = [gt[gt["sample"] == i][["x0", "y0", "x1", "y1"]].to_numpy() for i in range(len(manifest))]
    return recall_at_k([b for b, _ in props], gts, KS)


@flow(name="train_rdn")
def train_rdn(p: Params) -> dict:
    log = get_run_logger()
    cfg = p.rdn
    seed_everything(p.seed)
    hard = read_hard_classes(HARD)
    full, boxes = read_manifest(MANIFEST), read_table(BOXES)
    train = full.select("train", cfg.train.domains)
    train_boxes = boxes_for(boxes, train, hard)
    sides = np.sqrt((train_boxes.x1 - train_boxes.x0) * (train_boxes.y1 - train_boxes.y0)).to_numpy() * cfg.image_scale
    anchors = auto_anchor_sizes(sides) if cfg.anchor_sizes == "auto" else cfg.anchor_sizes
    model = build_rdn(cfg, anchors)
    device = pick_device(p.device)
    log.info(f"RDN on {len(train)} images, {len(train_boxes)} hard boxes, anchors {anchors}")
    ds = DetectionDataset(train, train_boxes, cfg.image_scale, train=True, hflip=cfg.train.hflip, seed=p.seed)
    curve = fit(model, ds, rpn_loss, cfg.train, CKPT, p.seed, device,
                {**params_of(p, "seed", "data", "boxes", "rdn"), "hard": hard, "inputs": stage_inputs("train_rdn")}, desc="rdn",
                collate_fn=detection_collate, optimizer="sgd")
    save_model(OUT, model, rdn_config(cfg, anchors))
    write_table(curve, csv=REPORTS / "train_curve.csv")

    sel = full.select(p.hard_classes.split, p.hard_classes.domain)
    recall = proposal_recall(model, sel, boxes_for(boxes, sel, hard), cfg.image_scale, device)
    metrics = {f"rdn.recall_{k}": round(v, 6) if v == v else None for k, v in recall.items()}
    metrics["rdn.hard_boxes_val"] = int(len(boxes_for(boxes, sel, hard)))
    write_json(REPORTS / "metrics.json", metrics)
    log.info(f"RDN recall on {p.hard_classes.split}/{p.hard_classes.domain}: {metrics}")
    return metrics


if __name__ == "__main__":
    run_stage(train_rdn, "Train the region detection network on hard-class context boxes.")
