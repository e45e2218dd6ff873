"""Export the image and region models to TorchScript (traced), checked against eager outputs."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from nightlab.io import atomic_path
from nightlab.models.store import load_seg_model


def export_model(model_dir: str | Path, out: str | Path, example_hw: tuple[int, int], atol: float = 1e-4) -> float:
    """Trace ``model_dir``'s model on a random (1, 3, H, W) input, save it, and return the max |diff|
    between the saved TorchScript module and eager PyTorch on a second input of another size."""
    model, _ = load_seg_model(model_dir)
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, *example_hw, generator=gen)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic are expected here
        traced = torch.jit.trace(model, example)
    with atomic_path(out) as tmp:
        torch.jit.save(traced, str(tmp))
    loaded = torch.jit.load(str(out))
    check = torch.rand(2, 3, example_hw[0] + 32, example_hw[1] + 64, generator=gen)
    with torch.no_grad():
        diff = (loaded(check) - model(check)).abs().max().item()
    if diff > atol:
        raise RuntimeError(f"{out}: exported model differs from eager by {diff:.2e} (> {atol})")
    return diff
