"""Compute budgets in FLOPs, counted by torch's own counter (``torch.utils.flop_counter``), so that
baselines can be given exactly the training compute of the two-level system (docs/design.md 1.9).

A training step's FLOPs are counted once, on a copy of the model (its weights, buffers and the
random state stay as they are) with a real batch, forward and backward; a stage's training FLOPs
are that times its steps. Inference FLOPs (HDM's scoring) are counted per image-model pass and per
region-model view shape. The counter counts matrix products and convolutions, which is where all
but a sliver of these networks' arithmetic is.
"""
from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode


def step_flops(model: torch.nn.Module, loss_fn, batch) -> int:
    """FLOPs of one training step (forward and backward) of ``model`` on ``batch`` = (x, y). It may draw
    random numbers (the RPN samples anchors): callers that must not disturb a run fork the generator."""
    twin = copy.deepcopy(model).train()
    x, y = batch
    with FlopCounterMode(display=False) as counter:
        loss_fn(twin, x, y).backward()
    return int(counter.get_total_flops())


@torch.inference_mode()
def forward_flops(model: torch.nn.Module, *inputs) -> int:
    """FLOPs of one forward pass of ``model`` (in eval mode) on ``inputs``."""
    twin = copy.deepcopy(model).eval()
    with FlopCounterMode(display=False) as counter:
        twin(*inputs)
    return int(counter.get_total_flops())


def mean_step_flops(model, loss_fn, loader, batches: int = 3) -> float:
    """The mean FLOPs of a training step over the first ``batches`` batches of ``loader`` (batches of
    different input shapes cost differently)."""
    counts = []
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        counts.append(step_flops(model, loss_fn, batch))
    return sum(counts) / max(len(counts), 1)


def training_record(step: float, steps: int, other: float = 0.0, what: str = "") -> dict:
    """What a training stage writes about its compute: FLOPs per step, steps, other FLOPs (HDM's
    scoring), and the total."""
    return {"step_flops": float(step), "steps": int(steps), "other_flops": float(other),
            "train_flops": float(step * steps + other), **({"other": what} if what else {})}


def total_flops(records: dict[str, dict]) -> float:
    """The training FLOPs of a whole system: the sum over its stages' records."""
    return float(sum(r["train_flops"] for r in records.values()))


def giga(flops: float) -> float:
    """FLOPs in GFLOP, rounded for reports."""
    return round(flops / 1e9, 3)
