"""Stage train_image_model: the image-level model Φ^I on whole images at ``image_scale``
(docs/design.md 1.1), or the user's own model (``image_model.external``), checked and written
to the same place.

The stage declares every ``image_model`` key except ``window`` (INFERENCE_ONLY): the sliding
window changes how the model runs, never how it is trained, so it is read by the stages that run
the image model and changing it retrains nothing.

DVC cannot depend on a path that only params.yaml names when that path may be null (dvc.yaml
templating of ``${image_model.external}`` fails on the null default), so the external file is not
a DVC dependency: the stage reruns when the path changes (a declared param), not when the file's
content changes at the same path (then run ``dvc repro -f -s train_image_model``). The md5 of the
file is written into models/image/config.json, so the output, and every later stage, follows its
content whenever the stage runs.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger

from flows.common import StageOutputs, params_of, stage_flow, stage_inputs, stage_main
from flows.declare import plot
from flows.paths import CHECKPOINTS, IMAGE_MODEL, IMAGE_REPORTS, MANIFEST, PREPARED, compute_file
from flows.training import fit_seg_model
from nightlab.compute import training_record
from nightlab.config import ImageModelConfig
from nightlab.data.dataset import ImageDataset
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.distributed import launch
from nightlab.io import write_json, write_table
from nightlab.models.store import import_image_model
from nightlab.train import empty_curve
from nightlab.viz import plot_curve

READS = (MANIFEST, PREPARED)
WRITES = (IMAGE_MODEL, IMAGE_REPORTS / "train_curve.csv", plot(IMAGE_REPORTS / "train_curve.png"),
          compute_file("train_image_model"))
CKPT = CHECKPOINTS / "image"
INFERENCE_ONLY = ("window",)  # image_model keys this stage does not read (tests/test_dvc_yaml.py checks)
# What training depends on: the checkpoint key (a resumed run must have trained with the same values).
TRAINING_KEYS = tuple(f"image_model.{k}" for k in ImageModelConfig.model_fields
                      if k not in (*INFERENCE_ONLY, "external"))
# data.synthetic and data.sources: saved with the model (what it was trained on: nightlab predict warns
# on synthetic-trained models); they change data/prepared whenever they change, so they rerun nothing more.
PARAMS = ("seed", "device", "splits.train",
          *(f"image_model.{k}" for k in ImageModelConfig.model_fields if k not in INFERENCE_ONLY), "distributed",
          "data.synthetic", "data.sources")


def train(p, model_dir: Path, curve_csv: Path) -> dict:
    """Fit the image model on whole images at its scale; runs in each training process
    (nightlab.distributed). Rank 0 writes the model and its curve to the (staged) paths it is given."""
    cfg = p.image_model

    def dataset(device):
        m = read_manifest(MANIFEST).select(p.splits.train, cfg.train.domains)
        return ImageDataset(m, cfg.image_scale, train=True, crop=cfg.train.crop, hflip=cfg.train.hflip, seed=p.seed,
                            cache_mb=cfg.train.cache_mb)

    key = {**params_of(p, "seed", "splits.train", *TRAINING_KEYS, "distributed"),
           "inputs": stage_inputs("train_image_model")}
    return fit_seg_model(p, cfg, dataset, CKPT, key, (model_dir, curve_csv), "image model")


def use_external(p, log) -> dict:
    """``image_model.external``: check the user's model and write it as models/image; no training
    (the training curve is written empty)."""
    cfg = p.image_model
    device = pick_device(p.device)
    log.info(f"image_model.external: using {cfg.external} at scale {cfg.image_scale} instead of training")
    with StageOutputs() as staged:
        config = import_image_model(cfg.external, staged(IMAGE_MODEL, directory=True), cfg.image_scale, device)
        write_table(empty_curve(), csv=staged(IMAGE_REPORTS / "train_curve.csv"))
        plot_curve(empty_curve(), staged(IMAGE_REPORTS / "train_curve.png"), f"Image model: {cfg.external}")
        write_json(staged(compute_file("train_image_model")), training_record(0.0, 0))  # trained elsewhere
    log.info(f"{cfg.external}: {config['arch']} model checked on {device} and written to {IMAGE_MODEL} "
             f"(md5 {', '.join(config['external']['md5'].values())})")
    return {"external": cfg.external}


@stage_flow("train_image_model")
def train_image_model(p) -> dict:
    log = get_run_logger()
    cfg, d = p.image_model, p.distributed
    if cfg.external:
        return use_external(p, log)
    log.info(f"training {cfg.backbone} ({'+'.join(cfg.train.domains)}) at scale {cfg.image_scale} "
             f"on {d.nnodes} x {d.nproc_per_node} process(es)")
    with StageOutputs() as staged:
        out = launch(train, p, staged(IMAGE_MODEL, directory=True), staged(IMAGE_REPORTS / "train_curve.csv"), cfg=d)
        write_json(staged(compute_file("train_image_model")), out["compute"])
        plot_curve(pd.read_csv(staged(IMAGE_REPORTS / "train_curve.csv")), staged(IMAGE_REPORTS / "train_curve.png"),
                   f"Image model Φ^I ({cfg.backbone}, scale {cfg.image_scale}): training loss")
    log.info(f"done on {out['samples']} images ({out['device']}): final loss {out['final_loss']:.4f}, "
             f"loss drop {out['drop']:.1%}")
    return {"final_loss": out["final_loss"]}


if __name__ == "__main__":
    stage_main(train_image_model, "Train the image-level model (or check and use image_model.external).")
