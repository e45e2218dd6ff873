"""What the two segmentation-model stages share (train_image_model, train_region_model): one
training run in each training process (nightlab.distributed), rank 0 writing the model and its
curve to the staged paths it is given."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nightlab.compute import training_record
from nightlab.device import pick_device
from nightlab.distributed import is_main, setup
from nightlab.io import write_table
from nightlab.labels import NUM_CLASSES
from nightlab.models import build_seg_model
from nightlab.models.loss import make_loss
from nightlab.models.store import TRAINED_ON, save_model, seg_config, training_data
from nightlab.train import Run, curve_drop, empty_curve, fit, seed_everything


def fit_seg_model(p, cfg, dataset: Callable, ckpt: Path, key: dict, outputs: tuple[Path, Path], desc: str,
                  init: Callable | None = None) -> dict:
    """Build the model of ``cfg`` (an image_model or region_model section), start it with ``init(model)``
    when given, and fit it on ``dataset(device)`` (None or empty: nothing to train on, the model is saved
    as it starts), resuming from ``ckpt`` when ``key`` (the params and input digests) is the checkpoint's.
    ``outputs``: (model directory, curve CSV); ``desc`` labels the progress bar. Returns what the stage
    logs: samples, device, final loss and loss drop."""
    seed_everything(p.seed)
    device = setup(pick_device(p.device))
    ds = dataset(device)  # before the model: building it draws the initial weights from the seeded generator
    model = build_seg_model(cfg, NUM_CLASSES)
    if init is not None:
        init(model)
    curve = empty_curve()
    if ds is not None and len(ds):
        run = Run(ckpt, p.seed, device, key, desc, sync_bn=p.distributed.sync_bn)
        curve = fit(model, ds, make_loss(cfg), cfg.train, run)
    if is_main():
        save_model(outputs[0], model, {**seg_config(cfg), TRAINED_ON: training_data(p)})
        write_table(curve, csv=outputs[1])
    return {"samples": len(ds) if ds is not None else 0, "device": str(device),
            "final_loss": float(curve.loss.iloc[-1]) if len(curve) else float("nan"), "drop": curve_drop(curve),
            "compute": training_record(curve.attrs.get("step_flops", 0.0), cfg.train.iters if len(curve) else 0)}
