"""What the torch.distributed test trains: importable by name, since spawned workers unpickle it."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from fixtures_data import FlippedPairs
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nightlab.config import ImageTrainConfig
from nightlab.distributed import is_main, setup, sync_batchnorm, world
from nightlab.metrics import Evaluator
from nightlab.models import SegModel
from nightlab.models.loss import make_loss
from nightlab.train import Run, fit, seed_everything

CLASSES = 4


class Patches(FlippedPairs):
    """Images whose classes are coarse 4x4-cell patterns (so the network must use context)."""

    def __init__(self, n: int, seed: int, size: int = 32):
        g = torch.Generator().manual_seed(seed)
        cells = torch.randint(0, CLASSES, (n, 4, 4), generator=g)
        self.y = cells.repeat_interleave(size // 4, 1).repeat_interleave(size // 4, 2)
        palette = torch.rand(CLASSES, 3, generator=torch.Generator().manual_seed(1234))  # one palette for every split
        self.x = (palette[self.y].permute(0, 3, 1, 2) * 0.9 + 0.1 * torch.rand(n, 3, size, size, generator=g)) * 0.5
        self.seed, self.epoch = seed, 0


class NoNormNet(nn.Module):
    """A small conv net without BatchNorm, with SegModel's calling convention: without batch
    statistics, data-parallel training must match one process up to float rounding."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=2, dilation=2),
                                  nn.ReLU(), nn.Conv2d(16, CLASSES, 1))

    def forward(self, x, aux: bool = False):
        logits = self.body(x)
        return (logits, None, x) if aux else logits


def initial_model(batchnorm: bool, seed: int) -> torch.nn.Module:
    """The untrained model of :func:`train`: the same weights for the same seed."""
    torch.manual_seed(seed)
    return SegModel("test_resnet", CLASSES, decoder_channels=8, light_adaptation=True) if batchnorm else NoNormNet()


def train(out_dir: str, iters: int, batch_size: int, seed: int = 0, batchnorm: bool = True) -> dict:
    """Train a tiny SegModel (or NoNormNet) with nightlab.train.fit, in this process or as one rank of several."""
    device = setup(torch.device("cpu"))
    seed_everything(seed)
    model = initial_model(batchnorm, seed)
    cfg = ImageTrainConfig(iters=iters, batch_size=batch_size, lr=3e-3, ckpt_every=iters, log_every=1, amp=False)
    loss = make_loss(SimpleNamespace(night_aware_loss=True, dark_weight=1.0, light_reg=0.01))
    curve = fit(model, Patches(24, seed), loss, cfg, Run(Path(out_dir), seed, device, {"seed": seed}, "ddp test"))
    if not is_main():
        return {}
    model.eval()
    ev = Evaluator(CLASSES)
    held_out = Patches(16, seed + 1)
    with torch.no_grad():
        for x, y in zip(held_out.x, held_out.y):
            ev.update(model(x[None])[0].argmax(0), y)
    return {"world": world()[0], "loss": curve.loss.tolist(), "mIoU": ev.result()["mIoU"],
            "params": {k: v.detach().clone() for k, v in model.named_parameters()}}


def gradients(sync_bn: bool = True) -> dict:
    """One forward/backward of SegModel with the night-aware loss on a fixed global batch of 4,
    split over the ranks; rank 0 returns the (DDP-averaged) parameter gradients."""
    device = setup(torch.device("cpu"))
    size, rank = world()
    torch.manual_seed(0)
    model = SegModel("test_resnet", CLASSES, decoder_channels=8, light_adaptation=True)
    data = Patches(4, 0)
    share = 4 // size
    x, y = data.x[rank * share:(rank + 1) * share], data.y[rank * share:(rank + 1) * share]
    net = model
    if size > 1:
        net = DistributedDataParallel(sync_batchnorm(model, device) if sync_bn else model)
    net.train()
    make_loss(SimpleNamespace(night_aware_loss=True, dark_weight=1.0, light_reg=0.01))(net, x, y).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()} if rank == 0 else {}
