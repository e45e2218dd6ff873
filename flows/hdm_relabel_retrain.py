"""Stage hdm_relabel_retrain: relabel RDN proposals by whether zooming in helps, then fine-tune
(supplement section A; docs/design.md 1.6).

1. RDN proposals on every training image, scored by nightlab.hdm.score_proposals (one image-model
   pass per image, proposal windows through the region model in batches): crop IoU of the image
   level, the region model and their merge; v' by ``hdm.criterion``; Y^P = Y x v'. Every number is
   written to data/hdm_proposals.parquet. The relabelling runs on images both models were trained
   on (as the supplement does): their crop IoUs are optimistic for both levels alike.
2. Fine-tune a copy of the RDN toward ``hdm.targets`` (nightlab.hdm.finetune_targets).
3. Compare HDM with the RDN on the selection split: recall of the hard boxes at 10/50/100
   proposals, and the crop-IoU gain of the top-10 proposals (negative when zooming hurts).
Work runs in shards of images: Prefect tasks with persisted results keyed by a digest of the
stage's inputs and the params, so a killed run resumes with the shards it finished.
"""
from __future__ import annotations

import time

import pandas as pd
import torch
from prefect import get_run_logger, task

from flows.common import (
    StageOutputs,
    catch_user_errors,
    digest,
    key_from_arg,
    params_of,
    stage_flow,
    stage_inputs,
    stage_main,
    task_results,
)
from flows.declare import metric, plot
from flows.paths import (
    BOXES,
    CHECKPOINTS,
    HARD_SET,
    HDM_MODEL,
    HDM_PROPOSALS,
    HDM_REPORTS,
    IMAGE_MODEL,
    MANIFEST,
    PREPARED,
    RDN_MODEL,
    REGION_MODEL,
    compute_file,
)
from nightlab.boxes import boxes_for
from nightlab.compute import forward_flops, training_record
from nightlab.data.dataset import DetectionDataset
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.evaluation import RECALL_KS, proposal_recall
from nightlab.hard import read_hard_classes
from nightlab.hdm import crop_gain, finetune_targets, kept_gt_boxes, score_proposals
from nightlab.inference import model_input, takes_prior
from nightlab.io import read_table, write_json, write_table
from nightlab.labels import NUM_CLASSES
from nightlab.merge import MergeRule
from nightlab.models.rdn import load_rdn, rpn_loss
from nightlab.models.store import save_model
from nightlab.regions import views
from nightlab.train import Run, empty_curve, fit, mean_loss, seed_everything
from nightlab.trained import Detector, TrainedModels
from nightlab.variants import DETECTORS
from nightlab.viz import plot_curve

READS = (MANIFEST, PREPARED, BOXES, HARD_SET, IMAGE_MODEL, REGION_MODEL, RDN_MODEL)
WRITES = (HDM_PROPOSALS, HDM_MODEL, metric(HDM_REPORTS / "metrics.json"),
          HDM_REPORTS / "finetune_curve.csv", plot(HDM_REPORTS / "finetune_curve.png"),
          compute_file("hdm_relabel_retrain"))
PARAMS = ("seed", "device", "splits.train", "splits.select", "hdm", "rdn.train", "image_model.window", "merge.rule",
          "merge.margin")
CKPT = CHECKPOINTS / "hdm"
SHARD = 16


@task(persist_result=True, cache_key_fn=key_from_arg, task_run_name="relabel images {first}-")
@catch_user_errors
def relabel_shard(key: str, first: int, last: int, rows: tuple, hdm, rule: MergeRule, device_name: str,
                  window=None) -> pd.DataFrame:
    """Score the proposals of training images first..last-1 (``rows``: the train selectors and domains)."""
    m = read_manifest(MANIFEST).select(*rows)
    hard = read_hard_classes(HARD_SET)
    gt = boxes_for(read_table(BOXES), m, hard)
    models = _models(device_name, window)
    samples = list(range(first, last))
    props = models.propose("rdn", [m.image(s) for s in samples], hdm.proposals_per_image, anchors=True)
    return score_proposals(models, m, gt, props, samples, hard, hdm, rule)


def _models(device_name: str, window) -> TrainedModels:
    """The image and region models and the RDN, as the relabelling and the comparison use them."""
    return TrainedModels.load(IMAGE_MODEL, pick_device(device_name), window, REGION_MODEL, {"rdn": RDN_MODEL})


@stage_flow("hdm_relabel_retrain")
def hdm_relabel_retrain(p) -> dict:
    log = get_run_logger()
    seed_everything(p.seed)
    device = pick_device(p.device)
    full, boxes, hard = read_manifest(MANIFEST), read_table(BOXES), read_hard_classes(HARD_SET)
    domains = p.rdn.train.domains
    train = full.select(p.splits.train, domains)
    train_gt = boxes_for(boxes, train, hard)

    # stage_inputs hashes the manifest, the boxes, the hard set and the three models (dvc.yaml deps).
    window = p.image_model.window
    keys = ("seed", "device", "hdm", "splits.train", "image_model.window", "merge.rule", "merge.margin")
    base = digest(stage_inputs("hdm_relabel_retrain"), params_of(p, *keys), domains)
    t0 = time.perf_counter()
    rule = MergeRule.of(p.merge)
    sel = full.select(p.splits.select)
    gt = boxes_for(boxes, sel, hard)

    def scored(rows, manifest, what: str, salt: str) -> pd.DataFrame:
        """Every proposal of every image of ``manifest`` scored, in shards (Prefect tasks, cached)."""
        n = len(manifest)
        futures = [relabel_shard.with_options(task_run_name=f"relabel {what} {i}-{min(i + SHARD, n) - 1} of {n}")
                   .submit(digest(base, salt, i), i, min(i + SHARD, n), rows, p.hdm, rule, p.device, window)
                   for i in range(0, n, SHARD)]
        return pd.concat(task_results(futures), ignore_index=True)

    table = scored((p.splits.train, domains), train, "training images", "train")
    seconds = time.perf_counter() - t0
    # The selection split's proposals too: the fine-tune's held-out loss, to see when it has flattened.
    val_table = scored((p.splits.select, None), sel, "selection images", "select")
    positives, kept = int(table.orig_positive.sum()), int(table.new_label.sum())
    kept_boxes = kept_gt_boxes(table, train_gt)
    targets, anchor_labels = finetune_targets(table, train_gt, p.hdm.targets, p.hdm.gain_temperature)
    log.info(f"{len(table)} proposals of {len(train)} training images scored in {seconds:.1f} s ({p.hdm.criterion}); "
             f"{kept}/{positives} positives kept; {len(kept_boxes)}/{len(train_gt)} hard boxes would stay positive; "
             f"fine-tune targets: {p.hdm.targets}")

    rdn, rcfg = load_rdn(RDN_MODEL, device)
    curve = empty_curve()
    if p.hdm.finetune_iters > 0:
        ds = DetectionDataset(train, targets, rcfg["image_scale"], train=True, hflip=p.rdn.train.hflip, seed=p.seed,
                              cache_mb=p.rdn.train.cache_mb, anchor_labels=anchor_labels)
        val_boxes, val_labels = finetune_targets(val_table, gt, p.hdm.targets, p.hdm.gain_temperature)
        held = DetectionDataset(sel, val_boxes, rcfg["image_scale"], anchor_labels=val_labels)
        tcfg = p.rdn.train.model_copy(update={"iters": p.hdm.finetune_iters, "lr": p.hdm.lr})
        key = {"base": base, "ft": tcfg.model_dump(mode="json")}
        run = Run(CKPT, p.seed, device, key, "hdm finetune", optimizer="sgd",
                  validate=lambda model: mean_loss(model, held, rpn_loss, tcfg.batch_size, device),
                  validate_every=max(1, p.hdm.finetune_iters // 10))
        curve = fit(rdn, ds, rpn_loss, tcfg, run)

    # HDM against the RDN it came from, on the selection split.
    rdn.eval()
    models = _models(p.device, window)
    models.detectors["hdm"] = Detector(rdn, rcfg["image_scale"])
    metrics = {"hdm.proposals": len(table), "hdm.positives": positives, "hdm.kept": kept,
               "hdm.kept_share": round(kept / positives, 6) if positives else None,
               "hdm.hard_boxes": len(train_gt), "hdm.hard_boxes_kept": len(kept_boxes)}
    for name in DETECTORS:
        for k, v in proposal_recall(models.detectors[name], sel, gt, models.device).items():
            metrics[f"hdm.val.{name}.recall_{k}"] = round(v, 6) if v == v else None
        props = models.propose(name, (sel.image(i) for i in range(len(sel))), RECALL_KS[0])
        gain = crop_gain(models, sel, props, hard, p.hdm, rule)
        metrics[f"hdm.val.{name}.crop_gain_top{RECALL_KS[0]}"] = round(gain, 6) if gain == gain else None
    gain_all = (table[f"iou_{p.hdm.criterion}"] - table.iou_image).mean() if len(table) else None
    metrics["hdm.train.crop_gain_all"] = None if gain_all is None else round(float(gain_all), 6)
    steps = p.hdm.finetune_iters if len(curve) else 0
    compute = training_record(curve.attrs.get("step_flops", 0.0), steps, scoring_flops(models, train, table),
                              "scoring the proposals of the training images (image model, RDN, region model)")
    with StageOutputs() as out:
        write_json(out(compute_file("hdm_relabel_retrain")), compute)
        write_table(table, parquet=out(HDM_PROPOSALS))
        write_table(curve, csv=out(HDM_REPORTS / "finetune_curve.csv"))
        plot_curve(curve, out(HDM_REPORTS / "finetune_curve.png"), "HDM: RDN fine-tuned on relabelled proposals, loss")
        save_model(out(HDM_MODEL, directory=True), rdn, rcfg)
        write_json(out(HDM_REPORTS / "metrics.json"), metrics)
    log.info(f"HDM metrics: {metrics}")
    return metrics


def scoring_flops(models: TrainedModels, train, table: pd.DataFrame) -> float:
    """The FLOPs of the relabelling: per training image an image-model and an RDN pass, and the region
    model on every view of every scored proposal (counted per view shape)."""
    if len(train) == 0:
        return 0.0
    image = train.image(0)
    rdn = models.detectors["rdn"]
    per_image = (forward_flops(models.image, model_input(image, models.image_scale, models.device))
                 + forward_flops(rdn.model, model_input(image, rdn.scale, models.device)))
    hw = list(zip(train.df.height.astype(int), train.df.width.astype(int)))
    shapes: dict = {}
    for r in table.itertuples():
        for v in views((r.x0, r.y0, r.x1, r.y1), *hw[int(r.sample)], models.rule):
            shapes[v.shape] = shapes.get(v.shape, 0) + 1
    prior = takes_prior(models.region)
    region = 0.0
    for shape, n in shapes.items():
        x = torch.zeros(2, 3, *shape, device=models.device)  # a batch of two: as the views run
        extra = (torch.zeros(2, NUM_CLASSES, *shape, device=models.device),) if prior else ()
        region += n * forward_flops(models.region, x, *extra) / 2
    return float(len(train) * per_image + region)


if __name__ == "__main__":
    stage_main(hdm_relabel_retrain, "HDM: relabel RDN proposals with the region/image comparison and fine-tune.")
