"""ONNX Runtime vs PyTorch on the CPU: the image and region models' forward pass on the same inputs.

The trained models of the inference benchmark (``--models DIR``, else the project's models/, else
a tiny-profile ``dvc repro``) are exported with nightlab.export.export_onnx to a temporary
directory, which checks them against eager PyTorch. Inputs are what two-level inference feeds the
models: the image model gets each val image downscaled by ``image_scale``, one image per call; the
region model gets the crops of the image's top ``merge.max_regions`` HDM proposals (by objectness,
without the score threshold, so every image has crops), cut into zoomed views of ``region_size``
(nightlab.regions), one batch per view shape (with the image model's logits cut to each view for a
region model that refines the image level). Only the forward pass is timed (logits from a tensor in
memory), so both engines do the same work. Each round runs the four side by side on every image; per
image the median over rounds, then the median over images. Both run on the CPU with the same number
of intra-op threads, and onnxruntime's threads do not busy-wait after a run: on a machine with few
cores they would hold the cores PyTorch's next run needs (2x its time measured on 2 cores).
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from benches.common import figure, temp_dir, timed
from benches.inference import project_manifest, trained_project
from flows.paths import MODELS
from nightlab.config import load_params
from nightlab.export import ONNX_OPSET, export_onnx, onnx_max_diff, ort_feed, ort_session
from nightlab.inference import model_input, region_inputs, takes_prior
from nightlab.trained import TrainedModels

ATOL = 1e-4


def run(quick: bool, models: str | None = None) -> dict:
    proj, source = trained_project(models)
    p = load_params(proj / "params.yaml")
    sel = project_manifest(proj).select(p.splits.report)
    models = TrainedModels.from_dir(proj / MODELS, "cpu", detectors=("hdm",))
    n, repeat, k = min(len(sel), 5 if quick else 50), 3 if quick else 5, max(p.merge.max_regions, 1)
    images = [sel.image(i) for i in range(n)]
    # per image, a list of batches, each the tuple of a model's inputs: rectangular views come in several
    # shapes, one batch each, and a PriorRefiner region model also reads the image level's logits
    image_in = [[(model_input(img, models.image_scale, "cpu"),)] for img in images]
    prior = takes_prior(models.region)
    region_in = [region_inputs(img, models.propose("hdm", [img], top_n=k)[0][0], models.rule,
                               models.image_logits(img) if prior else None) for img in images]
    region_in = [x for x in region_in if x]

    threads = torch.get_num_threads()
    out = temp_dir("onnx")
    models_at = {"image": (models.image, image_in), "region": (models.region, region_in)}
    sessions = {}
    for name, (_, xs) in models_at.items():
        export_onnx(proj / MODELS / name, out / f"{name}.onnx", tuple(xs[0][0][0].shape[-2:]), ATOL)
        sessions[name] = ort_session(out / f"{name}.onnx", threads, spin=False)

    def on_torch(model, batches):
        with torch.inference_mode():
            for x in batches:
                model(*x)

    def on_ort(session, batches):
        for x in batches:
            session.run(None, ort_feed(*x))

    runs = {f"{name}_{engine}": (fn, net, xs) for name, (model, xs) in models_at.items()
            for engine, fn, net in (("torch", on_torch, model), ("ort", on_ort, sessions[name]))}
    for fn, net, xs in runs.values():  # warm-up
        fn(net, xs[0])
    times = {key: np.zeros((repeat, len(xs))) for key, (_, _, xs) in runs.items()}
    for r in range(repeat):
        for key, (fn, net, xs) in runs.items():
            for i, x in enumerate(xs):
                times[key][r, i] = timed(lambda fn=fn, net=net, x=x: fn(net, x))
    per = {key: np.median(t, 0) for key, t in times.items()}
    ms = {key: float(np.median(v)) * 1e3 for key, v in per.items()}
    diff = {name: max(onnx_max_diff(sessions[name], model, *x) for batches in xs for x in batches)
            for name, (model, xs) in models_at.items()}

    h, w = images[0].shape[:2]
    hs, ws = image_in[0][0][0].shape[-2:]
    crops = float(np.mean([sum(len(x[0]) for x in batches) for batches in region_in]))
    figures = []
    for name, per_what in (("image", "per image"), ("region", f"per image ({crops:.1f} crops)")):
        figures += [
            figure(f"{name} model: ONNX Runtime / PyTorch time", ms[f"{name}_ort"] / ms[f"{name}_torch"], "x"),
            figure(f"{name} model, PyTorch {per_what}", ms[f"{name}_torch"], "ms"),
            figure(f"{name} model, ONNX Runtime {per_what}", ms[f"{name}_ort"], "ms"),
            figure(f"{name} model: max abs(ONNX Runtime - PyTorch) logits", diff[name], "", f"<= {ATOL:g}",
                   diff[name] <= ATOL),
        ]
    return {
        "title": "ONNX Runtime vs PyTorch, image and region models on the CPU",
        "setup": f"{source}; {n} {', '.join(map(str, p.splits.report))} images of {h}x{w}; image model on "
                 f"{hs}x{ws} inputs (image_scale {models.image_scale}), one image per call; region model on the "
                 f"top {k} HDM proposals per image as {models.rule.mode} views of side {models.rule.size}, one "
                 f"batch per view shape{' with the image level logits' if prior else ''}; forward pass only; both "
                 f"on the CPU with {threads} intra-op threads "
                 f"(torch.get_num_threads()); onnxruntime {ort.__version__} CPUExecutionProvider, 1 inter-op "
                 f"thread, no spinning between runs, default graph optimisations; ONNX opset {ONNX_OPSET}",
        "repeat": repeat,
        "figures": figures,
        "raw": {f"{key}_s": v.tolist() for key, v in per.items()} | {"project": str(proj)},
    }
