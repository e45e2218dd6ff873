"""Stage train_baseline@<name>: an image model alone, given the training FLOPs of the whole two-level
system (docs/design.md 1.9), from ``baselines.<name>``: the image level at its own scale trained
longer, or the image model at full resolution.

The budget is the sum of what the system's training stages record (reports/compute/*.json: the
image model, the RDN, the region model, HDM's scoring and fine-tune). One step of this model is
counted with torch's FLOP counter on its first batches; it trains for the budget divided by that,
with the image_model section's network, loss and optimiser settings and the baseline's own scale,
crop, batch size and learning rate. It is evaluated on the selection split (to choose how it
trains) and on the report split, per image, so evaluate_merged can compare it with NightLab with a
paired interval.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from prefect import get_run_logger

from flows.common import StageOutputs, params_of, stage_flow, stage_inputs, stage_main
from flows.declare import metric, plot
from flows.paths import (
    CHECKPOINTS,
    MANIFEST,
    PREPARED,
    TRAINING_STAGES,
    baseline_confusions,
    baseline_model,
    baseline_reports,
    compute_file,
)
from nightlab.compute import mean_step_flops, total_flops, training_record
from nightlab.data.dataset import ImageDataset
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.evaluation import image_confusions
from nightlab.io import atomic_path, read_json, write_json, write_table
from nightlab.labels import NUM_CLASSES
from nightlab.metrics import iou_from_confusion, miou
from nightlab.models import build_seg_model
from nightlab.models.loss import make_loss
from nightlab.models.store import save_model, seg_config
from nightlab.train import Run, fit, seed_everything
from nightlab.trained import TrainedModels
from nightlab.viz import plot_curve

FOREACH = "${baselines}"
READS = (MANIFEST, PREPARED, *(compute_file(s) for s in TRAINING_STAGES))
WRITES = (baseline_model("${key}"), baseline_confusions("${key}"), metric(baseline_reports("${key}") / "metrics.json"),
          baseline_reports("${key}") / "compute.json", baseline_reports("${key}") / "train_curve.csv",
          plot(baseline_reports("${key}") / "train_curve.png"))
PARAMS = ("baselines.${key}", "seed", "device", "splits.train", "splits.select", "splits.report",
          "image_model.backbone", "image_model.pretrained", "image_model.decoder_channels",
          "image_model.light_adaptation", "image_model.night_aware_loss", "image_model.dark_weight",
          "image_model.light_reg", "image_model.train")


@stage_flow("train_baseline", foreach=True)
def train_baseline(p, name: str) -> dict:
    log = get_run_logger()
    cfg, image_cfg = p.baselines[name], p.image_model
    seed_everything(p.seed)
    device = pick_device(p.device)
    budget = total_flops({s: read_json(compute_file(s)) for s in TRAINING_STAGES})
    rows = read_manifest(MANIFEST).select(p.splits.train, image_cfg.train.domains)
    ds = ImageDataset(rows, cfg.image_scale, train=True, crop=cfg.crop, hflip=image_cfg.train.hflip, seed=p.seed,
                      cache_mb=image_cfg.train.cache_mb)
    model = build_seg_model(image_cfg, NUM_CLASSES)
    loss = make_loss(image_cfg)
    train_cfg = image_cfg.train.model_copy(update={"batch_size": cfg.batch_size, "lr": cfg.lr, "crop": cfg.crop})
    with torch.random.fork_rng(devices=[]):  # counting draws nothing the training run would see
        step = mean_step_flops(model, loss, torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size))
    steps = max(1, math.floor(budget / step)) if step > 0 else 1
    train_cfg = train_cfg.model_copy(update={"iters": steps})
    log.info(f"baseline {name}: {budget / 1e12:.1f} TFLOP of training (the two-level system's) = {steps} steps of "
             f"{step / 1e9:.1f} GFLOP (scale {cfg.image_scale}, crop {cfg.crop}, batch {cfg.batch_size})")
    key = {**params_of(p, "seed", "splits.train", f"baselines.{name}", "image_model.backbone",
                       "image_model.decoder_channels", "image_model.light_adaptation", "image_model.night_aware_loss",
                       "image_model.dark_weight", "image_model.light_reg", "image_model.train",
                       "image_model.pretrained"),
           "steps": steps, "inputs": stage_inputs(f"train_baseline@{name}")}
    curve = fit(model, ds, loss, train_cfg, Run(CHECKPOINTS / "baselines" / name, p.seed, device, key,
                                                f"baseline {name}"))
    full = read_manifest(MANIFEST)
    with StageOutputs() as out:
        model_dir = out(baseline_model(name), directory=True)
        save_model(model_dir, model, {**seg_config(image_cfg), "image_scale": cfg.image_scale})
        models = TrainedModels.load(model_dir, device)
        metrics = {"baseline.steps": steps}
        confusions = {}
        for split, rows_ in (("select", p.splits.select), ("report", p.splits.report)):
            cms = image_confusions(models, full.select(rows_))
            confusions[split] = cms
            metrics[f"baseline.{split}.mIoU"] = round(float(miou(iou_from_confusion(cms.sum(0)))), 6)
        with atomic_path(out(baseline_confusions(name))) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, report=confusions["report"], select=confusions["select"])
        write_json(out(baseline_reports(name) / "metrics.json"), metrics)
        write_json(out(baseline_reports(name) / "compute.json"), {**training_record(step, steps), "budget": budget})
        write_table(curve, csv=out(baseline_reports(name) / "train_curve.csv"))
        plot_curve(curve, out(baseline_reports(name) / "train_curve.png"),
                   f"Baseline {name}: image model alone at scale {cfg.image_scale}, training loss")
    log.info(f"baseline {name}: mIoU {metrics['baseline.select.mIoU']:.4f} (select), "
             f"{metrics['baseline.report.mIoU']:.4f} (report)")
    return metrics


if __name__ == "__main__":
    stage_main(train_baseline, "Train an image model alone on the two-level system's training FLOPs.")
