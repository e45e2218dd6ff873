"""Stage train_image_model: the image-level model Φ^I on whole images at ``image_scale``."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.common import params_of, run_stage, stage_inputs
from nightlab.config import Params
from nightlab.data.dataset import ImageDataset
from nightlab.data.manifest import read_manifest
from nightlab.distributed import is_main, launch, setup
from nightlab.labels import NUM_CLASSES
from nightlab.models import build_seg_model
from nightlab.models.loss import make_loss
from nightlab.models.store import save_model, seg_config
from nightlab.train import curve_drop, fit, pick_device, seed_everything
from nightlab.io import write_table

MANIFEST = Path("data/manifest.parquet")
OUT = Path("models/image")
CKPT = Path("checkpoints/image")  # outside DVC outs: DVC deletes outs before a run, resume needs these
CURVE = Path("reports/image/train_curve.csv")


def train(p: Params) -> dict:
    """Build and fit the image model; runs in each training process (nightlab.distributed)."""
    cfg = p.image_model
    seed_everything(p.seed)
    device = setup(pick_device(p.device))
    m = read_manifest(MANIFEST).select("train", cfg.train.domains)
    ds = ImageDataset(m, cfg.image_scale, train=True, crop=cfg.train.crop, hflip=cfg.train.hflip, seed=p.seed)
    model = build_seg_model(cfg, NUM_CLASSES)
    curve = fit(model, ds, make_loss(cfg), cfg.train, CKPT, p.seed, device,
                {**params_of(p, "seed", "data", "image_model", "distributed"), "inputs": stage_inputs("train_image_model")},
                desc="image model", sync_bn=p.distributed.sync_bn)
    if is_main():
        save_model(OUT, model, seg_config(cfg))
        write_table(curve, csv=CURVE)
    return {"images": len(ds), "device": str(device), "final_loss": float(curve.loss.iloc[-1]), "drop": curve_drop(curve)}


@flow(name="train_image_model")
def train_image_model(p: Params) -> dict:
    log = get_run_logger()
    cfg, d = p.image_model, p.distributed
    log.info(f"training {cfg.backbone} ({'+'.join(cfg.train.domains)}) at scale {cfg.image_scale} "
             f"on {d.nnodes} x {d.nproc_per_node} process(es)")
    out = launch(train, p, cfg=d)
    log.info(f"done on {out['images']} images ({out['device']}): final loss {out['final_loss']:.4f}, "
             f"loss drop {out['drop']:.1%}")
    return {"final_loss": out["final_loss"]}


if __name__ == "__main__":
    run_stage(train_image_model, "Train the image-level model.")
