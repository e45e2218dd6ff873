"""Export trained models for deployment, each checked against eager PyTorch on an input of another
size (and batch) than the one it was exported with.

- TorchScript (traced): the image and region models.
- ONNX, checked with onnxruntime on the CPU, with dynamic batch, height and width axes:
  - a segmentation model (image or region): ``image`` (N, 3, H, W) RGB in [0, 1] -> ``logits``
    (N, 19, H, W); a region model that refines the image level (``region_model.prior: image``, a
    PriorRefiner) takes a second input, ``prior_logits`` (N, 19, H, W): the image model's logits cut
    to each view (:func:`nightlab.inference.cut_field`), as in TorchScript;
  - the network part of an RDN (or its HDM fine-tune), backbone + RPN head: ``image`` ->
    ``objectness_s8`` (N, A, H/8, W/8) and ``box_deltas_s8`` (N, 4A, H/8, W/8), and the same with
    ``_s16`` for an FPN RDN (A anchors per location). Anchor generation, box decoding, top-n and
    NMS stay in PyTorch/torchvision: pass the outputs, as tensors, to
    :meth:`nightlab.models.rdn.RDN.proposals`.

The traced graphs keep the light-adaptation branch of inputs at least 16 pixels on each side.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from nightlab.inference import takes_prior
from nightlab.io import DataError, atomic_path, read_json
from nightlab.labels import NUM_CLASSES
from nightlab.models.rdn import RDN, load_rdn
from nightlab.models.store import load_image_model

# Every onnxruntime since 1.14 (and TensorRT 8.6) runs opset 17, and these models need nothing newer.
ONNX_OPSET = 17
# The graphs' inputs, in forward's order; only a PriorRefiner takes the second.
INPUT_NAMES = ("image", "prior_logits")


class ExportError(RuntimeError):
    """The exported model does not reproduce eager PyTorch; the message names the file."""


def export_torchscript(model_dir: str | Path, out: str | Path, example_hw: tuple[int, int],
                       atol: float = 1e-4) -> float:
    """Trace ``model_dir``'s segmentation model on a random (1, 3, H, W) input, save it to ``out``, and
    return the max |diff| between the saved module and eager PyTorch on a (2, 3, H+32, W+64) input
    (with random prior logits of the same size for a PriorRefiner)."""
    model, _ = load_image_model(_model_dir(model_dir))  # an external TorchScript image model too
    example, check = _inputs(example_hw, takes_prior(model))
    with atomic_path(out) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notices and tracer warnings
            torch.jit.save(torch.jit.trace(model, example), str(tmp))
            diff = (torch.jit.load(str(tmp))(*check) - model(*check)).abs().max().item()
        _check(out, "TorchScript", diff, atol, check[0])
    return diff


def export_onnx(model_dir: str | Path, out: str | Path, example_hw: tuple[int, int], atol: float = 1e-4) -> float:
    """Export ``model_dir``'s model (a segmentation model, or an RDN's network part) to ONNX at ``out``,
    exported on a random (1, 3, H, W) input; return the max |diff| over all outputs between
    onnxruntime and eager PyTorch on a (2, 3, H+32, W+64) input. Nothing is written if the check fails."""
    net, outputs = _onnx_module(_model_dir(model_dir))
    example, check = _inputs(example_hw, takes_prior(net))
    inputs = INPUT_NAMES[:len(example)]
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in inputs} | outputs
    with atomic_path(out) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
            # The TorchScript-based exporter (dynamo=False): it needs only the onnx package, and the
            # torch.export-based one gives the same graph here at 6x the export time, with onnxscript.
            torch.onnx.export(net, example, str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=list(inputs), output_names=list(outputs), dynamic_axes=axes)
        diff = onnx_max_diff(ort_session(tmp), net, *check)
        _check(out, "onnxruntime", diff, atol, check[0])
    return diff


def ort_session(path: str | Path, threads: int | None = None, spin: bool = True) -> ort.InferenceSession:
    """An onnxruntime session on the CPU; ``threads`` intra-op threads (default: onnxruntime's choice).
    ``spin=False`` stops its threads busy-waiting after a run, which would hold the cores that
    PyTorch needs when the two run in turns (as in benches/onnx_runtime.py)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: its warnings would interleave with the command's report
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_feed(*x: torch.Tensor) -> dict[str, np.ndarray]:
    """onnxruntime's input dict for a model's inputs in forward's order (INPUT_NAMES)."""
    return {name: t.numpy() for name, t in zip(INPUT_NAMES, x, strict=False)}


def onnx_max_diff(session: ort.InferenceSession, net: nn.Module, *x: torch.Tensor) -> float:
    """Max |onnxruntime - eager| over all outputs of ``net`` on the inputs ``x`` (the image, and for a
    PriorRefiner the prior logits)."""
    with torch.no_grad():
        eager = net(*x)
    eager = eager if isinstance(eager, tuple) else (eager,)
    got = session.run(None, ort_feed(*x))
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, eager, strict=True))


class RDNNetwork(nn.Module):
    """:meth:`RDN.network` as a module with a flat output: (objectness, deltas) per level, coarse last."""

    def __init__(self, rdn: RDN):
        super().__init__()
        self.rdn = rdn
        # name -> dynamic axes, in output order
        self.outputs = {f"{kind}_s{s}": {0: "batch", 2: f"height_s{s}", 3: f"width_s{s}"}
                        for s in rdn.backbone.strides for kind in ("objectness", "box_deltas")}

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        objectness, deltas = self.rdn.network(image)
        return tuple(t for pair in zip(objectness, deltas) for t in pair)


def _model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: model directory not found (run the stage that trains it first)")
    return path


def _onnx_module(model_dir: Path) -> tuple[nn.Module, dict[str, dict[int, str]]]:
    """The module to export and its outputs' dynamic axes, by the model's ``arch``."""
    if read_json(model_dir / "config.json").get("arch") == "rdn":
        net = RDNNetwork(load_rdn(model_dir)[0]).eval()
        return net, net.outputs
    return load_image_model(model_dir)[0], {"logits": {0: "batch", 2: "height", 3: "width"}}


def _inputs(example_hw: tuple[int, int], prior: bool = False) -> tuple[tuple[torch.Tensor, ...], ...]:
    """The (export, check) inputs: an image, and with ``prior`` logits of the same size."""
    gen = torch.Generator().manual_seed(0)
    h, w = example_hw

    def one(n: int, hh: int, ww: int) -> tuple[torch.Tensor, ...]:
        image = torch.rand(n, 3, hh, ww, generator=gen)
        return (image, 4 * torch.randn(n, NUM_CLASSES, hh, ww, generator=gen)) if prior else (image,)
    return one(1, h, w), one(2, h + 32, w + 64)


def _check(out: str | Path, engine: str, diff: float, atol: float, x: torch.Tensor) -> None:
    if not diff <= atol:  # also a NaN
        raise ExportError(f"{out}: {engine} differs from eager PyTorch by {diff:.2e} (> {atol:g}) on a "
                          f"{tuple(x.shape)} input; not written")
