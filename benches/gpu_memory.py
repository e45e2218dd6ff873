"""GPU memory of a profile's three trainings, estimated on CPU and (where CUDA is present) measured.

``python -m benches.gpu_memory profiles/nightcity_cityscapes.yaml [more profiles] [--measure] [--steps N]``

Estimate (any machine): the models of the profile are built from scratch (same architecture as
``pretrained: timm``, nothing downloaded) and one loss forward runs on CPU at batch 2 on inputs of
the sizes the profile trains on (image model: ``image_model.train.crop``, or the whole frame at
``image_scale``; region model: ``region_size`` squared; RDN: the frame at ``rdn.image_scale``). A
``saved_tensors_hooks`` pack hook adds up the bytes autograd keeps for the backward pass (each
storage once, parameters left out): those activations grow linearly with the batch, so the
figure is that per sample times ``batch_size``, plus the weights, gradients and optimizer state
(AdamW 2 and SGD-momentum 1 extra copy per parameter, fp32). It is an fp32 figure: bf16 autocast
(``amp: true``) keeps most activations in bf16, roughly half; the transients of the backward pass,
the CUDA context and allocator slack come on top (checked once on an H200: the fp32 estimate was
up to ~13% below the measured peak).

Measure (``--measure``, CUDA only): a few training steps as ``nightlab.train.fit`` runs them
(bf16 autocast when ``amp``, AdamW or SGD) on random tensors of the same shapes at the real batch
size; reports torch.cuda.max_memory_allocated / max_memory_reserved and the median step time
(the model's compute only: no data loading).

Frame sizes per source kind are the datasets' published native sizes (FRAME below); the estimate
uses the largest frame among the profile's training rows.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from nightlab.config import load_profile
from nightlab.labels import NUM_CLASSES
from nightlab.models import build_seg_model
from nightlab.models.loss import make_loss
from nightlab.models.rdn import build_rdn, rpn_loss

FRAME = {"cityscapes": (1024, 2048), "nightcity": (512, 1024), "acdc": (1080, 1920), "darkzurich": (1080, 1920),
         "bdd100k": (720, 1280)}  # native (h, w)


def _frames(p) -> dict[str, tuple[int, int]]:
    """Native frame size of each source the train selectors can match (synthetic: its configured size)."""
    out = {}
    for name in p.data.source_names():
        kind = p.data.kind if name == p.data.kind else p.data.sources[name].kind
        size = (p.data.synthetic.height, p.data.synthetic.width) if kind == "synthetic" else FRAME.get(kind)
        if size and any(fnmatch.fnmatchcase(name, sel.source) for sel in p.splits.train):
            out[name] = size
    return out


def _shapes(p) -> dict[str, tuple[int, int, int]]:
    """(batch, h, w) of each training's inputs."""
    frames = _frames(p)
    h, w = max(frames.values(), key=lambda s: s[0] * s[1])
    im = p.image_model
    img_hw = tuple(im.train.crop) if im.train.crop else (round(h * im.image_scale), round(w * im.image_scale))
    night = [s for n, s in frames.items() if n not in ("cityscapes", "bdd100k")] or list(frames.values())
    rh, rw = max(night, key=lambda s: s[0] * s[1]) if "night" in p.rdn.train.domains else (h, w)
    return {"image_model": (im.train.batch_size, *img_hw),
            "region_model": (p.region_model.train.batch_size, p.region_model.region_size, p.region_model.region_size),
            "rdn": (p.rdn.train.batch_size, round(rh * p.rdn.image_scale), round(rw * p.rdn.image_scale))}


def _model_and_loss(p, name: str):
    if name == "rdn":
        cfg = p.rdn.model_copy(update={"pretrained": None})
        sizes = (16, 32, 64, 128) if cfg.anchor_sizes == "auto" else cfg.anchor_sizes
        image = None  # rdn.backbone: shared trains on the image model's (frozen) backbone: an untrained one here
        if cfg.backbone == "shared":
            image = build_seg_model(p.image_model.model_copy(update={"pretrained": None}), NUM_CLASSES)
        return build_rdn(cfg, sizes, image), rpn_loss, cfg.train, "sgd"
    cfg = getattr(p, name).model_copy(update={"pretrained": None})
    return build_seg_model(cfg, NUM_CLASSES), make_loss(cfg), cfg.train, "adamw"


def _inputs(name: str, b: int, h: int, w: int, device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 3, h, w, generator=g).to(device)
    if name == "rdn":  # a few boxes of 16..128 px per image
        y = []
        for _ in range(b):
            xy = torch.rand(8, 2, generator=g) * torch.tensor([w - 130, h - 130]).clamp_min(1)
            wh = 16 + torch.rand(8, 2, generator=g) * 112
            y.append({"boxes": torch.cat([xy, xy + wh], 1).to(device)})
        return x, y
    return x, torch.randint(0, NUM_CLASSES, (b, h, w), generator=g).to(device)


def _state_bytes(model, optimizer: str) -> int:
    params = sum(t.numel() * t.element_size() for t in model.parameters())
    return params * (4 if optimizer == "adamw" else 3)  # weights + grads + optimizer states


def _saved_bytes(model, loss_fn, x, y) -> int:
    """Bytes autograd saves for the backward pass of one loss forward (each storage once, no parameters)."""
    params = {t.untyped_storage().data_ptr() for t in model.parameters()}
    seen: set = set()

    def pack(t):
        seen.add((t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(model, x, y)
    return sum(n for ptr, n in seen if ptr not in params)


def estimate(p) -> dict:
    """fp32 bytes per training: saved activations per sample x batch, plus weights/grads/optimizer."""
    out = {}
    for name, (b, h, w) in _shapes(p).items():
        torch.manual_seed(0)
        model, loss_fn, _, opt = _model_and_loss(p, name)
        model.train()
        per_sample = _saved_bytes(model, loss_fn, *_inputs(name, 2, h, w, "cpu")) / 2  # 2: BatchNorm needs > 1
        out[name] = {"batch": b, "input_hw": [h, w], "activations_per_sample_gb": per_sample / 2**30,
                     "state_gb": _state_bytes(model, opt) / 2**30,
                     "fp32_total_gb": (b * per_sample + _state_bytes(model, opt)) / 2**30}
    return out


def measure(p, steps: int = 6, device: str = "cuda") -> dict:
    """Peak CUDA memory and step time of a few real training steps on random tensors (device cpu: a
    dry run of the same code, without memory figures)."""
    from nightlab.train import seed_everything

    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = {}
    for name, (b, h, w) in _shapes(p).items():
        seed_everything(0)
        model, loss_fn, tcfg, opt = _model_and_loss(p, name)
        model.to(device).train()
        optim = (torch.optim.SGD(model.parameters(), lr=tcfg.lr, momentum=0.9) if opt == "sgd"
                 else torch.optim.AdamW(model.parameters(), lr=tcfg.lr))
        x, y = _inputs(name, b, h, w, device)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            sync()
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.amp and cuda):
                loss = loss_fn(model, x, y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sync()
            times.append(time.perf_counter() - t0)
        step = statistics.median(times[1:] or times)
        out[name] = {"batch": b, "input_hw": [h, w], "amp": tcfg.amp and cuda, "step_s": step, "iters": tcfg.iters,
                     "train_h": step * tcfg.iters / 3600}
        if cuda:
            out[name].update(max_allocated_gb=torch.cuda.max_memory_allocated() / 2**30,
                             max_reserved_gb=torch.cuda.max_memory_reserved() / 2**30)
        del model, optim, x, y, loss
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.gpu_memory", description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", type=Path)
    ap.add_argument("--measure", action="store_true", help="also run real training steps on --device")
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of --measure")
    ap.add_argument("--no-estimate", action="store_true", help="skip the CPU estimate")
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args(argv)
    torch.set_grad_enabled(True)
    results = {}
    for path in a.profiles:
        p = load_profile(path)
        r = {"shapes": {k: list(v) for k, v in _shapes(p).items()}}
        if not a.no_estimate:
            r["estimate"] = estimate(p)
        if a.measure:
            if a.device == "cuda" and not torch.cuda.is_available():
                print("--measure needs CUDA (or --device cpu for a dry run)", file=sys.stderr)
                return 2
            r["measured"] = measure(p, a.steps, a.device)
            r["device"] = torch.cuda.get_device_name(0) if a.device == "cuda" else a.device
        results[str(path)] = r
        print(json.dumps({str(path): r}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
