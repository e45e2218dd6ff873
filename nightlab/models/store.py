"""Saving and loading trained models: ``model.pt`` (a state_dict) beside ``config.json``.

Loading uses ``torch.load(..., weights_only=True)``: a model directory never runs pickled code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nightlab.io import DataError, atomic_path, read_json, write_json
from nightlab.labels import NUM_CLASSES
from nightlab.models.segnet import SegModel


def save_model(out_dir: str | Path, model: torch.nn.Module, config: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    write_json(out_dir / "config.json", config)


def load_state(model_dir: str | Path) -> tuple[dict, dict]:
    model_dir = Path(model_dir)
    path = model_dir / "model.pt"
    if not path.is_file():
        raise DataError(f"{path}: model weights not found (run the stage that trains it first)")
    return torch.load(path, map_location="cpu", weights_only=True), read_json(model_dir / "config.json")


def seg_config(cfg) -> dict:
    """The part of a SegModelConfig needed to rebuild the network."""
    return {"arch": "seg", "backbone": cfg.backbone, "decoder_channels": cfg.decoder_channels,
            "light_adaptation": cfg.light_adaptation, "num_classes": NUM_CLASSES,
            **{k: getattr(cfg, k) for k in ("image_scale", "region_size") if hasattr(cfg, k)}}


def load_seg_model(model_dir: str | Path, device="cpu") -> tuple[SegModel, dict]:
    state, cfg = load_state(model_dir)
    model = SegModel(cfg["backbone"], cfg["num_classes"], cfg["decoder_channels"], cfg["light_adaptation"])
    model.load_state_dict(state)
    return model.to(device).eval(), cfg

