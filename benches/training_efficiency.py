"""Training efficiency of the image model: fit() throughput over a bare training step, and data
loading over what training consumes.

The stage's throughput is images/s through nightlab.train.fit (the loop train_image_model runs:
DataLoader, augmentation, loss, AdamW, poly LR, logging, checkpoints) with params.yaml's
image_model config, on a synthetic manifest generated with the library (no flows). Warm-up and
the final checkpoint are cancelled out by timing runs of two lengths and differencing. The peer is
forward + backward + optimizer step of the same model and loss on one preloaded batch of the
same shape. Rounds run the three side by side; each figure is a median over rounds.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from benches.common import ROOT, figure, timed
from nightlab.config import SyntheticConfig, load_params
from nightlab.data.dataset import ImageDataset
from nightlab.data.manifest import read_manifest, write_manifest
from nightlab.data.synthetic import generate_shard
from nightlab.device import pick_device
from nightlab.labels import NUM_CLASSES
from nightlab.models import build_seg_model
from nightlab.models.loss import make_loss
from nightlab.train import Run, fit, seed_everything

TARGET = 0.85


def _manifest(tmp: Path, scenes: int, h: int, w: int):
    rows = generate_shard(tmp / "data", "train", range(scenes), 0, SyntheticConfig(height=h, width=w))
    write_manifest(pd.DataFrame(rows), tmp / "manifest.parquet", tmp / "data")
    return read_manifest(tmp / "manifest.parquet")


def _dataset(m, cfg) -> ImageDataset:
    return ImageDataset(m, cfg.image_scale, train=True, crop=cfg.train.crop, hflip=cfg.train.hflip, seed=0)


def _fit_seconds(ds, cfg, iters: int, device, out: Path) -> float:
    torch.manual_seed(0)
    model, train = build_seg_model(cfg, NUM_CLASSES), cfg.train.model_copy(update={"iters": iters})
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # fit's progress bar
        fit(model, ds, make_loss(cfg), train, Run(out, 0, device, desc="bench"))
    return time.perf_counter() - t0


def _bare_rate(ds, cfg, steps: int, warmup: int, device) -> float:
    torch.manual_seed(0)
    model = build_seg_model(cfg, NUM_CLASSES).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    loss_fn, bs = make_loss(cfg), cfg.train.batch_size
    x = torch.stack([ds[i % len(ds)][0] for i in range(bs)]).to(device)
    y = torch.stack([ds[i % len(ds)][1] for i in range(bs)]).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.amp and device.type == "cuda"):
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def steps_synced(n):
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    steps_synced(warmup)
    return steps * bs / timed(lambda: steps_synced(steps))


def _loading_rates(m, cfg) -> tuple[float, float]:
    """Samples/s of ImageDataset: cold (decode + resize + augment) and once cached (augment only)."""
    ds = _dataset(m, cfg)
    cold = len(ds) / timed(lambda: [ds[i] for i in range(len(ds))])
    cached = len(ds) / timed(lambda: [ds[i] for i in range(len(ds))])
    return cold, cached


def run(quick: bool) -> dict:
    p = load_params(ROOT / "params.yaml")
    cfg, device = p.image_model, pick_device(p.device)
    scenes, (h, w), (short, long), repeat = (4, (64, 128), (1, 3), 3) if quick else (32, (256, 512), (5, 20), 3)
    bs, warmup = cfg.train.batch_size, 1 if quick else 2
    rounds = []
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(p.seed)  # as the stage does (deterministic algorithms on)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            m = _manifest(tmp, scenes, h, w).select(p.splits.train, cfg.train.domains)
            ds = _dataset(m, cfg)
            for i in range(len(ds)):  # fill the cache: the stage decodes each image once, in its first epoch
                ds.load(i)
            for r in range(repeat):
                t_short = _fit_seconds(ds, cfg, short, device, tmp / f"fit{r}s")
                t_long = _fit_seconds(ds, cfg, long, device, tmp / f"fit{r}l")
                fit_rate = (long - short) * bs / (t_long - t_short)
                bare = _bare_rate(ds, cfg, long - short, warmup, device)
                cold, cached = _loading_rates(m, cfg)
                rounds.append(dict(fit=fit_rate, bare=bare, ratio=fit_rate / bare, cold=cold, cached=cached))
    finally:
        torch.use_deterministic_algorithms(deterministic)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ratio = med["ratio"]
    return {
        "title": "Training efficiency (image model)",
        "setup": f"{cfg.backbone}, decoder {cfg.decoder_channels}, batch {bs}, {len(m)} images of {h}x{w} at scale "
                 f"{cfg.image_scale} ({scenes} scenes, day + night), on {device} with {torch.get_num_threads()} "
                 f"torch threads; fit() timed for {short} and {long} iterations and differenced; bare step "
                 f"timed for {long - short} steps after {warmup} warm-up step(s)",
        "repeat": repeat,
        "figures": [
            figure("fit() throughput / bare step throughput", ratio, "", f">= {TARGET}", ratio >= TARGET),
            figure("fit() training throughput", med["fit"], "images/s"),
            figure("bare forward+backward+step throughput", med["bare"], "images/s"),
            figure("data loading, cached, / training consumption", med["cached"] / med["fit"], "x"),
            figure("data loading, cold, / training consumption", med["cold"] / med["fit"], "x"),
            figure("ImageDataset cached", med["cached"], "samples/s"),
            figure("ImageDataset cold (decode + resize + augment)", med["cold"], "samples/s"),
        ],
        "raw": {"rounds": rounds},
    }
