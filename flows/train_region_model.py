"""Stage train_region_model: Φ^R on zoomed crops of hard-region context boxes (DESIGN 1.5).

Evaluated on the selection split's hard boxes: per-class IoU of the region model on the crops,
beside the image model's prediction cut to the same crops (both at native crop resolution).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from prefect import flow, get_run_logger

from flows.common import params_of, run_stage, stage_inputs
from nightlab.boxes import boxes_for
from nightlab.config import Params
from nightlab.data.dataset import RegionDataset
from nightlab.data.manifest import read_manifest
from nightlab.distributed import is_main, launch, setup
from nightlab.hard import read_hard_classes
from nightlab.inference import image_probs, int_box, region_probs
from nightlab.io import read_table, write_json, write_table
from nightlab.labels import CLASS_NAMES, NUM_CLASSES
from nightlab.metrics import Evaluator, metrics_to_flat
from nightlab.models import build_seg_model
from nightlab.models.loss import make_loss
from nightlab.models.store import load_seg_model, save_model, seg_config
from nightlab.train import fit, pick_device, seed_everything
from nightlab.viz import plot_grouped_iou

MANIFEST = Path("data/manifest.parquet")
BOXES = Path("data/boxes.parquet")
HARD = Path("reports/hard_classes.json")
IMAGE_MODEL = Path("models/image")
OUT = Path("models/region")
CKPT = Path("checkpoints/region")
REPORTS = Path("reports/region")


def evaluate_on_crops(region, image_model, manifest, boxes, region_size, image_scale, device, batch_size):
    """Per-class IoU on crops: region model vs the image model's prediction cut to the same box."""
    ev_r, ev_i = Evaluator(), Evaluator()
    for s, g in boxes.groupby("sample"):
        img, lab = manifest.image(int(s)), torch.from_numpy(manifest.label(int(s)))
        full = image_probs(image_model, img, image_scale, device).argmax(0).cpu()
        h, w = lab.shape
        bxs = g[["x0", "y0", "x1", "y1"]].to_numpy()
        for b, pr in zip(bxs, region_probs(region, img, bxs, region_size, device, batch_size)):
            x0, y0, x1, y1 = int_box(b, h, w)
            ev_r.update(pr.argmax(0).cpu(), lab[y0:y1, x0:x1])
            ev_i.update(full[y0:y1, x0:x1], lab[y0:y1, x0:x1])
    return ev_r.result(), ev_i.result()


def train(p: Params) -> dict:
    """Build and fit the region model; runs in each training process (nightlab.distributed)."""
    cfg = p.region_model
    seed_everything(p.seed)
    device = setup(pick_device(p.device))
    hard = read_hard_classes(HARD)
    train_set = read_manifest(MANIFEST).select("train", cfg.train.domains)
    train_boxes = boxes_for(read_table(BOXES), train_set, hard)
    model = build_seg_model(cfg, NUM_CLASSES)
    if len(train_boxes):
        ds = RegionDataset(train_set, train_boxes, cfg.region_size, train=True, jitter=cfg.jitter,
                           hflip=cfg.train.hflip, seed=p.seed)
        curve = fit(model, ds, make_loss(cfg), cfg.train, CKPT, p.seed, device,
                    {**params_of(p, "seed", "data", "boxes", "region_model", "distributed"), "hard": hard,
                     "inputs": stage_inputs("train_region_model")}, desc="region model", sync_bn=p.distributed.sync_bn)
        if is_main():
            write_table(curve, csv=REPORTS / "train_curve.csv")
    if is_main():
        save_model(OUT, model, seg_config(cfg))
    return {"crops": len(train_boxes)}


@flow(name="train_region_model")
def train_region_model(p: Params) -> dict:
    log = get_run_logger()
    cfg = p.region_model
    hard = read_hard_classes(HARD)
    log.info(f"region model for hard classes {hard}, size {cfg.region_size}, "
             f"{p.distributed.nnodes} x {p.distributed.nproc_per_node} process(es)")
    crops = launch(train, p, cfg=p.distributed)["crops"]
    if crops == 0:
        log.warning("no hard-class boxes to train on: saved the untrained region model (merging changes nothing)")
    else:
        log.info(f"trained on {crops} crops")
    full, boxes = read_manifest(MANIFEST), read_table(BOXES)
    device = pick_device(p.device)
    model, _ = load_seg_model(OUT, device)  # what rank 0 saved: the same weights however it was trained

    image_model, icfg = load_seg_model(IMAGE_MODEL, device)
    sel = full.select(p.hard_classes.split, p.hard_classes.domain)
    val_boxes = boxes_for(boxes, sel, hard)
    res_r, res_i = evaluate_on_crops(model, image_model, sel, val_boxes, cfg.region_size, icfg["image_scale"],
                                     device, p.merge.batch_size)
    table = pd.DataFrame({"class_name": CLASS_NAMES, "region": res_r["iou"], "image_on_crops": res_i["iou"]})
    write_table(table, csv=REPORTS / "crop_iou.csv")
    plot_grouped_iou(table, ["image_on_crops", "region"], REPORTS / "crop_iou.png",
                     "Per-class IoU inside hard-region crops", highlight=[CLASS_NAMES[c] for c in hard])
    metrics = {**metrics_to_flat(res_r, "region.crops"), **metrics_to_flat(res_i, "image.crops"),
               "region.crops.count": int(len(val_boxes))}
    write_json(REPORTS / "metrics.json", metrics)
    log.info(f"crops mIoU: region {res_r['mIoU']:.4f} vs image {res_i['mIoU']:.4f} on {len(val_boxes)} crops")
    return metrics


if __name__ == "__main__":
    run_stage(train_region_model, "Train the region-level model on zoomed hard-region crops.")
