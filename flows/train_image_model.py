"""Stage train_image_model: the image-level model Φ^I on whole images at ``image_scale``
(docs/design.md 1.1)."""
from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from flows.common import StageOutputs, params_of, stage_flow, stage_inputs, stage_main
from flows.paths import CHECKPOINTS, IMAGE_MODEL, IMAGE_REPORTS, MANIFEST, PREPARED
from nightlab.data.dataset import ImageDataset
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.distributed import is_main, launch, setup
from nightlab.io import write_table
from nightlab.labels import NUM_CLASSES
from nightlab.models import build_seg_model
from nightlab.models.loss import make_loss
from nightlab.models.store import save_model, seg_config
from nightlab.train import curve_drop, fit, seed_everything

READS = (MANIFEST, PREPARED)
WRITES = (IMAGE_MODEL, IMAGE_REPORTS / "train_curve.csv")
CKPT = CHECKPOINTS / "image"


def train(p, model_dir: Path, curve_csv: Path) -> dict:
    """Build and fit the image model; runs in each training process (nightlab.distributed). Rank 0
    writes the model and its curve to the (staged) paths it is given."""
    cfg = p.image_model
    seed_everything(p.seed)
    device = setup(pick_device(p.device))
    m = read_manifest(MANIFEST).select(p.splits.train, cfg.train.domains)
    ds = ImageDataset(m, cfg.image_scale, train=True, crop=cfg.train.crop, hflip=cfg.train.hflip, seed=p.seed)
    model = build_seg_model(cfg, NUM_CLASSES)
    key = {**params_of(p, "seed", "splits.train", "image_model", "distributed"),
           "inputs": stage_inputs("train_image_model")}
    curve = fit(model, ds, make_loss(cfg), cfg.train, CKPT, p.seed, device, key, desc="image model",
                sync_bn=p.distributed.sync_bn)
    if is_main():
        save_model(model_dir, model, seg_config(cfg))
        write_table(curve, csv=curve_csv)
    return {"images": len(ds), "device": str(device), "final_loss": float(curve.loss.iloc[-1]),
            "drop": curve_drop(curve)}


@stage_flow("train_image_model")
def train_image_model(p) -> dict:
    log = get_run_logger()
    cfg, d = p.image_model, p.distributed
    log.info(f"training {cfg.backbone} ({'+'.join(cfg.train.domains)}) at scale {cfg.image_scale} "
             f"on {d.nnodes} x {d.nproc_per_node} process(es)")
    with StageOutputs() as staged:
        out = launch(train, p, staged(IMAGE_MODEL, directory=True), staged(IMAGE_REPORTS / "train_curve.csv"), cfg=d)
    log.info(f"done on {out['images']} images ({out['device']}): final loss {out['final_loss']:.4f}, "
             f"loss drop {out['drop']:.1%}")
    return {"final_loss": out["final_loss"]}


if __name__ == "__main__":
    stage_main(train_image_model, "Train the image-level model.")
