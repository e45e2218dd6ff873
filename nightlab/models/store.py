"""Saving and loading trained models: ``model.pt`` (a state_dict) beside ``config.json``.

Loading uses ``torch.load(..., weights_only=True)``: a model directory never runs pickled code.
The image-level model may also be a user's own TorchScript module (``image_model.external``):
its directory then holds ``model.torchscript.pt`` and a ``config.json`` with ``"arch": "torchscript"``,
and :func:`load_image_model` loads either kind.
"""
from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import torch

from nightlab.io import DataError, atomic_path, read_json, write_json
from nightlab.labels import NUM_CLASSES
from nightlab.models.segnet import PriorRefiner, SegModel

TORCHSCRIPT_FILE = "model.torchscript.pt"
CHECK_SHAPE = (2, 3, 64, 96)  # the dummy input an external image model must map to (2, 19, 64, 96)


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:  # a truncated or foreign file
        raise DataError(f"{path}: not a readable model file ({_first_line(err)}); train it again (dvc repro)") from None
    return state, read_json(model_dir / "config.json")


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}".rstrip(": ")


def load_weights(model: torch.nn.Module, state: dict, model_dir: str | Path) -> torch.nn.Module:
    """``state`` into ``model``; weights that do not fit the network its config.json describes (a model.pt
    copied from another run) are a DataError naming the directory."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise DataError(f"{model_dir}: model.pt does not fit the network config.json describes (weights from "
                        f"another run?): {_first_line(err)[:300]}") from None
    return model


def seg_config(cfg) -> dict:
    """The part of a SegModelConfig needed to rebuild the network."""
    return {"arch": "seg", "backbone": cfg.backbone, "decoder_channels": cfg.decoder_channels,
            "light_adaptation": cfg.light_adaptation, "num_classes": NUM_CLASSES,
            **{k: getattr(cfg, k) for k in ("image_scale", "region_size", "crop", "max_zoom", "min_scale", "prior",
                                            "prior_temperature") if hasattr(cfg, k)}}


TRAINED_ON = "trained_on"  # config.json key: the data params the model was trained with (training_data)


def training_data(p) -> dict:
    """What a model was trained on, from the run's params: ``data.synthetic`` (the generator's settings,
    None without synthetic data), the names of ``data.sources`` and ``splits.train``. Saved in the model's
    config.json under :data:`TRAINED_ON`, so that whoever uses the model (``nightlab predict``) can tell."""
    synthetic = p.data.synthetic
    return {"data.synthetic": None if synthetic is None else synthetic.model_dump(mode="json"),
            "data.sources": sorted(p.data.sources), "splits.train": [str(s) for s in p.splits.train]}


def seg_from_config(cfg: dict) -> torch.nn.Module:
    """The untrained network of a :func:`seg_config` dict (a PriorRefiner around it with ``prior: image``)."""
    net = SegModel(cfg["backbone"], cfg["num_classes"], cfg["decoder_channels"], cfg["light_adaptation"])
    if cfg.get("prior", "none") == "image":
        return PriorRefiner(net, cfg["num_classes"], cfg.get("prior_temperature", 1.0))
    return net


def load_seg_model(model_dir: str | Path, device="cpu") -> tuple[SegModel, dict]:
    state, cfg = load_state(model_dir)
    model = load_weights(seg_from_config(cfg), state, model_dir)
    return model.to(device).eval(), cfg


def load_torchscript(path: str | Path, device="cpu") -> torch.nn.Module:
    """A TorchScript module from ``path`` (``torch.jit.load``), in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: TorchScript model file not found")
    try:
        module = torch.jit.load(str(path), map_location=torch.device(device))
    except (RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"{path}: not a TorchScript module (torch.jit.load: {first})") from None
    return module.eval()


def load_image_model(model_dir: str | Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """The model of a model directory, whichever kind it holds: a SegModel (``model.pt``, arch ``seg``)
    or a TorchScript module (arch ``torchscript``, written for ``image_model.external``)."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    if cfg_path.is_file():
        cfg = read_json(cfg_path)
        if isinstance(cfg, dict) and cfg.get("arch") == "torchscript":
            return load_torchscript(model_dir / cfg.get("file", TORCHSCRIPT_FILE), device), cfg
    return load_seg_model(model_dir, device)


# ----------------------------------------------------------------------- a user's image model

def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _external_files(src: Path) -> tuple[str, list[Path]]:
    """What ``image_model.external`` names: ("seg", [model.pt, config.json]) for a directory saved by
    :func:`save_model` (or its model.pt), else ("torchscript", [the file])."""
    if src.is_dir():
        return "seg", [src / "model.pt", src / "config.json"]
    if not src.is_file():
        raise DataError(f"{src}: external image model not found (image_model.external: a TorchScript file or a "
                        "model directory with model.pt and config.json)")
    config = src.parent / "config.json"
    if src.name == "model.pt" and config.is_file():
        return "seg", [src, config]
    return "torchscript", [src]


def check_image_model(model: torch.nn.Module, source: str | Path, device="cpu") -> None:
    """Run ``model`` on a small random input; it must return float logits (N, 19, H, W), finite.
    Any failure is a DataError naming ``source``."""
    n, _, h, w = CHECK_SHAPE
    x = torch.rand(*CHECK_SHAPE, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as err:  # the user's model, any code: its failure is the user's to fix, not our bug
        first = (str(err).strip().splitlines() or [""])[0]
        raise DataError(f"{source}: the model fails on a {tuple(CHECK_SHAPE)} float RGB input in [0, 1]: "
                        f"{type(err).__name__}: {first}") from None
    expected = (n, NUM_CLASSES, h, w)
    if not isinstance(out, torch.Tensor):
        raise DataError(f"{source}: the model returns a {type(out).__name__}, expected one tensor of logits "
                        f"{expected} for a {tuple(CHECK_SHAPE)} input")
    if tuple(out.shape) != expected:
        raise DataError(f"{source}: the model returns shape {tuple(out.shape)} for a {tuple(CHECK_SHAPE)} input, "
                        f"expected {expected}: logits of the {NUM_CLASSES} Cityscapes train classes at the input size")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise DataError(f"{source}: the model's logits are not finite floats ({out.dtype})")


def import_image_model(src: str | Path, out_dir: str | Path, image_scale: float, device="cpu") -> dict:
    """Validate a user's image model (``image_model.external``) and write it as a model directory.

    ``src`` is a directory saved by :func:`save_model` (or its ``model.pt``), or a TorchScript file taking
    (N, 3, H, W) float RGB in [0, 1] and returning (N, 19, H, W) logits in trainIds order. The model is
    loaded and run on a small input (:func:`check_image_model`); then ``out_dir`` gets a copy of its
    file(s) and a ``config.json`` with ``image_scale``, the source path and the md5 of each source file,
    so that the directory's content changes whenever the model's does. Returns that config.
    """
    src, out_dir = Path(src), Path(out_dir)
    kind, files = _external_files(src)
    if kind == "seg":
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{src}: not a model directory saved by nightlab: {', '.join(missing)} not found "
                            "(or give a TorchScript file)")
        source_cfg = read_json(files[1])
        if not isinstance(source_cfg, dict) or source_cfg.get("arch") != "seg":
            raise DataError(f"{files[1]}: not a segmentation model's config (\"arch\": \"seg\" expected)")
        try:
            model, _ = load_seg_model(files[0].parent, device)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"{files[0].parent}: cannot rebuild the model saved there: {first}") from None
    else:
        model = load_torchscript(src, device)
    check_image_model(model, src, device)

    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "seg":
        config = {**source_cfg, "image_scale": image_scale}
        with atomic_path(out_dir / "model.pt") as tmp:
            shutil.copyfile(files[0], tmp)
    else:
        config = {"arch": "torchscript", "file": TORCHSCRIPT_FILE, "num_classes": NUM_CLASSES,
                  "image_scale": image_scale}
        with atomic_path(out_dir / TORCHSCRIPT_FILE) as tmp:
            shutil.copyfile(src, tmp)
    config["external"] = {"path": str(src), "md5": {f.name: file_md5(f) for f in files}}
    write_json(out_dir / "config.json", config)
    return config
