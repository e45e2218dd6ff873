"""One training loop for the image and the region model (torchvision references style).

Iteration-based with a poly learning rate; a checkpoint dict ``{model, optimizer, lr_scheduler,
epoch, iter, params}`` every ``ckpt_every`` iterations (written atomically), and resume from it
after a kill. Data order and augmentation are seeded by (seed, epoch, index), so a resumed run
ends with the same weights as an uninterrupted one on CPU.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from nightlab.compute import mean_step_flops
from nightlab.distributed import mean_across_ranks, sync_batchnorm, world
from nightlab.io import atomic_path, write_table

CKPT_NAME = "checkpoint.pt"
# One row every log_every steps. The curve is a tracked output, so it holds no timing (which changes on every run
# and would leave a rerun of the same code with a dirty tree): the rate is in the untracked train_log.csv.
CURVE_COLUMNS = ["iter", "epoch", "loss", "lr"]


def empty_curve() -> pd.DataFrame:
    """The training curve of a run that trained nothing (an external model, no samples)."""
    return pd.DataFrame(columns=CURVE_COLUMNS)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def poly_lr(optimizer, total_iters: int, power: float):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - min(it, total_iters) / total_iters) ** power)


def grouped_batches(groups: list, batch_size: int, seed: int, epoch: int, multiple: int = 1) -> list[list[int]]:
    """One epoch of batches whose samples share a group (the input shape of the region model's views), in a
    random order seeded by (seed, epoch): samples are taken in a seeded permutation and each joins the open
    batch of its group, which is emitted when full; the groups' last, partial batches come at the end, cut
    to a multiple of ``multiple`` (the processes a batch is split over)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    open_: dict = {}
    out = []
    for i in torch.randperm(len(groups), generator=g).tolist():
        batch = open_.setdefault(groups[i], [])
        batch.append(i)
        if len(batch) == batch_size:
            out.append(batch)
            open_[groups[i]] = []
    for batch in open_.values():
        batch = batch[: len(batch) // multiple * multiple]
        if len(batch) > 1:  # a batch of one would train batch norm on one sample's statistics
            out.append(batch)
    return out


def batches_per_epoch(dataset: Dataset, batch_size: int) -> int:
    """Steps in one epoch (drop_last), fixed across epochs: the step count of a resumed run."""
    groups = getattr(dataset, "groups", None)
    if groups is not None and len(set(groups)) > 1:
        return max(1, len(grouped_batches(groups, batch_size, 0, 0, world()[0])))
    return max(1, len(dataset) // batch_size)


def _loader(dataset: Dataset, batch_size: int, epoch: int, seed: int, workers: int, collate_fn=None) -> DataLoader:
    """One epoch's batches, the same global batches for any number of processes.

    DistributedSampler shuffles with a permutation seeded by (seed, epoch) and gives rank r the
    indices r, r + W, r + 2W, ...: the union over the W ranks of their step-i batches (each of
    batch_size / W) is the step-i batch of a single process (W = 1, the default). A dataset whose
    samples come in groups that cannot share a batch (``dataset.groups``: the region model's views of
    several input shapes) gets :func:`grouped_batches`, each split over the ranks the same way.
    """
    dataset.set_epoch(epoch)
    size, rank = world()
    groups = getattr(dataset, "groups", None)
    if groups is not None and len(set(groups)) > 1:
        mine = [b[rank::size] for b in grouped_batches(groups, batch_size, seed, epoch, size)]
        return DataLoader(dataset, batch_sampler=mine, num_workers=workers, persistent_workers=False,
                          collate_fn=collate_fn)
    sampler = DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed * 100_003,
                                 drop_last=len(dataset) >= batch_size)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size // size, sampler=sampler, drop_last=len(dataset) >= batch_size,
                      num_workers=workers, persistent_workers=False, collate_fn=collate_fn)


def to_device(obj, device):
    """Tensors, and lists/dicts of them (detection targets), moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, it: int, params: dict, log: list) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict(), "epoch": epoch, "iter": it, "params": params,
                    "log": log}, tmp)


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, device, span: tuple[int, int, int],
                    amp: bool = False, on_step=None) -> int:
    """Run batches until the epoch or the run ends; returns the iteration reached.

    ``span`` is (start_iter, end_iter, skip): the iteration the epoch starts at, the one the run stops at,
    and how many of the epoch's batches were trained on before a resume. ``loss_fn(model, x, y) -> loss``;
    ``on_step(it, loss, lr)`` is called after each step.
    """
    start_iter, end_iter, skip = span
    model.train()
    it = start_iter
    for b, (x, y) in enumerate(loader):
        if b < skip:  # resuming mid-epoch: these batches were already trained on
            continue
        if it >= end_iter:
            break
        x, y = to_device(x, device), to_device(y, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            loss = loss_fn(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        it += 1
        if on_step:
            on_step(it, mean_across_ranks(loss.item()), scheduler.get_last_lr()[0])
    return it


@dataclass(frozen=True)
class Run:
    """How one training run goes, besides its TrainConfig: where it checkpoints (``out_dir``), its
    seed and device, the ``key`` a checkpoint must carry to be resumed (the params and input digests
    it was trained with), the progress bar's label, the optimizer (``adamw``, or ``sgd`` with momentum
    for detection heads), whether BatchNorm statistics are synchronised across processes, and a held-out
    loss (``validate(model) -> float``, called in eval mode every ``validate_every`` steps and at the end:
    the curve gains a val_loss column, to see when training has flattened)."""
    out_dir: Path
    seed: int
    device: torch.device
    key: dict = field(default_factory=dict)
    desc: str = "train"
    optimizer: str = "adamw"
    sync_bn: bool = True
    validate: object = None
    validate_every: int = 25


def fit(model, dataset: Dataset, loss_fn, cfg, run: Run, stop_after: int | None = None) -> pd.DataFrame:
    """Train ``model`` for ``cfg.iters`` iterations (a TrainConfig), resuming from ``run.out_dir``.

    Batches are collated by ``dataset.collate`` when it has one (detection targets). ``stop_after`` ends
    the run early after that many iterations (tests use it to simulate a kill). Inside a
    torch.distributed process group (nightlab.distributed) it trains data-parallel; rank 0 alone writes
    checkpoints, logs and the progress bar. Returns the training curve: one row every ``log_every``
    steps with columns iter, epoch, loss and lr (``out_dir/train_log.csv`` adds it_per_s);
    ``curve.attrs["step_flops"]`` is the FLOPs of one step over the global batch (nightlab.compute),
    counted on the first batches.
    """
    out_dir, seed, device, params, desc = Path(run.out_dir), run.seed, run.device, run.key, run.desc
    collate_fn = getattr(dataset, "collate", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    size, rank = world()
    main = rank == 0
    if size > 1 and cfg.batch_size % size:
        raise ValueError(f"train.batch_size {cfg.batch_size} is not divisible by the {size} processes")
    if size > 1 and run.sync_bn:  # BatchNorm statistics over the global batch, as in the single-process run.
        # Before the optimizer: on CPU the synchronised BatchNorms are new modules with new parameters.
        model = sync_batchnorm(model, device)
    trainable = [q for q in model.parameters() if q.requires_grad]  # a frozen part (rdn.backbone: shared) stays out
    if run.optimizer == "sgd":  # detection heads train best with SGD + momentum, as in torchvision's references
        optimizer = torch.optim.SGD(trainable, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = poly_lr(optimizer, cfg.iters, cfg.poly_power)
    it, log = 0, []
    ckpt_path = out_dir / CKPT_NAME
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("params") == params:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["lr_scheduler"])
            it, log = ckpt["iter"], list(ckpt["log"])
            tqdm.write(f"{desc}: resuming from {ckpt_path} at iteration {it}")
        else:
            tqdm.write(f"{desc}: {ckpt_path} was written with other params; starting over")
    batches = batches_per_epoch(dataset, cfg.batch_size)  # per epoch, fixed: epoch = it // batches
    gpus = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):  # counting draws nothing the training run would see
        first = (to_device(b, device) for b in _loader(dataset, cfg.batch_size, 0, seed, 0, collate_fn))
        flops = mean_step_flops(model, loss_fn, first) * size
    end = cfg.iters if stop_after is None else min(cfg.iters, stop_after)
    t0, n0 = time.perf_counter(), it
    bar = tqdm(total=cfg.iters, initial=it, desc=desc, dynamic_ncols=True, mininterval=1.0, disable=not main)
    net = model  # what the loss calls: under torch.distributed, a DDP wrapper that averages gradients
    if size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def on_step(i, loss, lr):
        rate = (i - n0) / max(time.perf_counter() - t0, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", its=f"{rate:.2f}")
        if i % cfg.log_every == 0 or i == cfg.iters:
            log.append(dict(iter=i, epoch=(i - 1) // batches, loss=loss, lr=lr, it_per_s=rate))
        if run.validate is not None and (i % run.validate_every == 0 or i == cfg.iters):
            log.append(dict(iter=i, epoch=(i - 1) // batches, val_loss=held_out(model, run.validate)))
        if main and (i % cfg.ckpt_every == 0 or i == end):  # one writer; every rank resumes from it
            save_checkpoint(ckpt_path, model, optimizer, scheduler, i // batches, i, params, log)

    while it < end:
        epoch, skip = divmod(it, batches)  # skip: batches of this epoch trained before a resume
        loader = _loader(dataset, cfg.batch_size, epoch, seed, cfg.workers, collate_fn)
        it = train_one_epoch(net, loader, optimizer, scheduler, loss_fn, device, (it, end, skip), cfg.amp, on_step)
    bar.close()
    columns = CURVE_COLUMNS + (["val_loss"] if run.validate is not None else [])
    # a step's training and held-out rows are one row of the curve
    table = pd.DataFrame(log, columns=[*columns, "it_per_s"]).groupby("iter", as_index=False, sort=True).first()
    if main:
        write_table(table, csv=out_dir / "train_log.csv")
    curve = table[columns]
    curve.attrs["step_flops"] = flops
    return curve


def mean_loss(model, dataset: Dataset, loss_fn, batch_size: int, device) -> float:
    """``loss_fn`` over all of ``dataset`` (batches of ``batch_size``, in order), weighted by batch size."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=getattr(dataset, "collate", None))
    total = n = 0
    for x, y in loader:
        k = len(x)
        total += float(loss_fn(model, to_device(x, device), to_device(y, device))) * k
        n += k
    return total / max(n, 1)


def held_out(model, validate) -> float:
    """``validate(model)`` in eval mode with the random state left as it was; training resumes after."""
    was = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)  # the RPN samples anchors: the same sample at every evaluation
            return float(validate(model))
    finally:
        model.train(was)


def curve_drop(curve: pd.DataFrame) -> float:
    """Relative loss drop from the first to the last logged tenth (a sanity figure for logs)."""
    if len(curve) < 2:
        return math.nan
    k = max(1, len(curve) // 10)
    return 1 - curve.loss.tail(k).mean() / curve.loss.head(k).mean()
