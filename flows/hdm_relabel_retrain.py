"""Stage hdm_relabel_retrain: relabel RDN proposals by whether zooming in helps, then fine-tune.

1. RDN proposals on every training image (the image model runs once per image; the proposal
   crops go through the region model in batches).
2. For each proposal: originally positive iff IoU >= hdm.match_iou with a ground-truth hard box;
   crop IoU of the region and of the image prediction against the labels; v' and Y^P = Y x v'
   (nightlab.hdm). Every number is written to data/hdm_proposals.parquet.
3. Fine-tune a copy of the RDN with the new labels. Our choice for torchvision's anchor-based RPN:
   the kept positive proposals (Y^P = 1) become the target boxes, so anchors that produced them
   stay positive and regress toward them, while proposals HDM rejected fall back to background
   (supplement eq. 2: the regression loss follows the new positives).
Work runs in shards of images: Prefect tasks with persisted results keyed by a digest of the
models, the manifest and the params, so a killed run resumes with the shards it finished.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from prefect import flow, get_run_logger, task

from flows.common import digest, key_from_arg, params_of, run_stage, stage_inputs
from flows.train_rdn import KS, proposal_recall, rpn_loss
from nightlab.boxes import boxes_for, match_to_gt
from nightlab.config import Params
from nightlab.data.dataset import DetectionDataset, detection_collate
from nightlab.data.manifest import read_manifest
from nightlab.hard import read_hard_classes
from nightlab.hdm import crop_iou, relabel
from nightlab.inference import image_probs, int_box, propose, region_probs
from nightlab.io import read_table, write_json, write_table
from nightlab.models.rdn import rdn_from_config
from nightlab.models.store import load_seg_model, load_state, save_model
from nightlab.train import fit, pick_device, seed_everything

MANIFEST, BOXES, HARD = Path("data/manifest.parquet"), Path("data/boxes.parquet"), Path("reports/hard_classes.json")
IMAGE, REGION, RDN = Path("models/image"), Path("models/region"), Path("models/rdn")
OUT, CKPT, TABLE, REPORTS = Path("models/hdm"), Path("checkpoints/hdm"), Path("data/hdm_proposals.parquet"), Path("reports/hdm")
SHARD = 16


def load_rdn(path: Path, device):
    state, cfg = load_state(path)
    model = rdn_from_config(cfg)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg


def score_proposals(manifest, gt_boxes, props, image_model, region, image_scale, region_size, match_iou,
                    device, batch_size, samples) -> pd.DataFrame:
    """Crop IoU of both models for each proposal of each sample; one image-model pass per image."""
    rows = []
    for s, (boxes, scores) in zip(samples, props):
        img, lab = manifest.image(s), torch.from_numpy(manifest.label(s))
        h, w = lab.shape
        gt = gt_boxes[gt_boxes["sample"] == s][["x0", "y0", "x1", "y1"]].to_numpy()
        best, positive = match_to_gt(boxes, gt, match_iou)
        full = image_probs(image_model, img, image_scale, device).argmax(0).cpu()
        for j, (b, pr) in enumerate(zip(boxes, region_probs(region, img, boxes, region_size, device, batch_size))):
            x0, y0, x1, y1 = int_box(b, h, w)
            y = lab[y0:y1, x0:x1]
            rows.append(dict(sample=int(s), rank=j, x0=b[0], y0=b[1], x1=b[2], y1=b[3], score=float(scores[j]),
                             best_gt_iou=float(best[j]), orig_positive=bool(positive[j]),
                             iou_region=crop_iou(pr.argmax(0).cpu(), y), iou_image=crop_iou(full[y0:y1, x0:x1], y)))
    df = pd.DataFrame(rows)
    if len(df):
        df["v"], df["new_label"] = relabel(df.orig_positive, df.iou_region, df.iou_image)
    return df


@task(persist_result=True, cache_key_fn=key_from_arg, task_run_name="relabel-{first}")
def relabel_shard(key: str, first: int, last: int, p: Params) -> pd.DataFrame:
    device = pick_device(p.device)
    m = read_manifest(MANIFEST).select("train", p.rdn.train.domains)
    hard = read_hard_classes(HARD)
    gt = boxes_for(read_table(BOXES), m, hard)
    rdn, rcfg = load_rdn(RDN, device)
    image_model, icfg = load_seg_model(IMAGE, device)
    region, gcfg = load_seg_model(REGION, device)
    samples = list(range(first, last))
    props = propose(rdn, [m.image(s) for s in samples], rcfg["image_scale"], device, p.hdm.proposals_per_image)
    return score_proposals(m, gt, props, image_model, region, icfg["image_scale"], gcfg["region_size"],
                           p.hdm.match_iou, device, p.hdm.batch_size, samples)


def crop_gain(manifest, props, image_model, region, icfg, gcfg, device, batch_size) -> float:
    """Mean (region - image) crop IoU over the given proposals of every image of ``manifest``."""
    df = score_proposals(manifest, pd.DataFrame(columns=["sample", "x0", "y0", "x1", "y1"]), props, image_model,
                         region, icfg["image_scale"], gcfg["region_size"], 0.5, device, batch_size,
                         list(range(len(manifest))))
    return float((df.iou_region - df.iou_image).mean()) if len(df) else float("nan")


@flow(name="hdm_relabel_retrain")
def hdm_relabel_retrain(p: Params) -> dict:
    log = get_run_logger()
    seed_everything(p.seed)
    device = pick_device(p.device)
    full, boxes, hard = read_manifest(MANIFEST), read_table(BOXES), read_hard_classes(HARD)
    train = full.select("train", p.rdn.train.domains)

    # stage_inputs hashes the manifest, boxes, hard classes and the three models (dvc.yaml deps).
    base = digest(stage_inputs("hdm_relabel_retrain"), params_of(p, "seed", "device", "hdm"), p.rdn.train.domains)
    t0 = time.perf_counter()
    futures = [relabel_shard.submit(digest(base, i), i, min(i + SHARD, len(train)), p) for i in range(0, len(train), SHARD)]
    shards = [f.result() for f in futures]
    seconds = time.perf_counter() - t0
    table = pd.concat(shards, ignore_index=True)
    write_table(table, parquet=TABLE)
    positives = int(table.orig_positive.sum())
    kept = int(table.new_label.sum())
    log.info(f"{len(table)} proposals scored in {seconds:.1f} s; {kept}/{positives} positives kept")

    # Fine-tune a copy of the RDN on the kept positive proposals.
    rdn, rcfg = load_rdn(RDN, device)
    targets = table[table.new_label == 1][["sample", "x0", "y0", "x1", "y1"]]
    if p.hdm.finetune_iters > 0:
        ds = DetectionDataset(train, targets, rcfg["image_scale"], train=True, seed=p.seed)
        tcfg = p.rdn.train.model_copy(update={"iters": p.hdm.finetune_iters, "lr": p.hdm.lr})
        curve = fit(rdn, ds, rpn_loss, tcfg, CKPT, p.seed, device, {"base": base, "ft": tcfg.model_dump(mode="json")},
                    desc="hdm finetune", collate_fn=detection_collate, optimizer="sgd")
        write_table(curve, csv=REPORTS / "finetune_curve.csv")
    save_model(OUT, rdn, rcfg)

    # Compare HDM with the RDN on the selection split.
    rdn_base, _ = load_rdn(RDN, device)
    rdn.eval()
    sel = full.select(p.hard_classes.split, p.hard_classes.domain)
    gt = boxes_for(boxes, sel, hard)
    image_model, icfg = load_seg_model(IMAGE, device)
    region, gcfg = load_seg_model(REGION, device)
    metrics = {"hdm.proposals": len(table), "hdm.positives": positives, "hdm.kept": kept,
               "hdm.kept_share": round(kept / positives, 6) if positives else None,
               "hdm.relabel_proposals_per_s": round(len(table) / seconds, 3) if seconds > 0 else None}
    for name, model in (("rdn", rdn_base), ("hdm", rdn)):
        for k, v in proposal_recall(model, sel, gt, rcfg["image_scale"], device).items():
            metrics[f"hdm.val.{name}.recall_{k}"] = round(v, 6) if v == v else None
        props = propose(model, [sel.image(i) for i in range(len(sel))], rcfg["image_scale"], device, KS[0])
        gain = crop_gain(sel, props, image_model, region, icfg, gcfg, device, p.hdm.batch_size)
        metrics[f"hdm.val.{name}.crop_gain_top{KS[0]}"] = round(gain, 6) if gain == gain else None
    kept_rows = table[table.new_label == 1]
    metrics["hdm.train.crop_gain_kept"] = round(float((kept_rows.iou_region - kept_rows.iou_image).mean()), 6) if len(kept_rows) else None
    metrics["hdm.train.crop_gain_all"] = round(float((table.iou_region - table.iou_image).mean()), 6) if len(table) else None
    write_json(REPORTS / "metrics.json", metrics)
    log.info(f"HDM metrics: {metrics}")
    return metrics


if __name__ == "__main__":
    run_stage(hdm_relabel_retrain, "HDM: relabel RDN proposals with the region/image comparison and fine-tune.")
