"""PyTorch CPU runtime settings for the two models of two-level inference, side by side.

Per image, on the same images as the inference benchmark: the image model's forward pass on the
scaled image, and the region model's on that image's views (the default K regions, one batch),
under each setting, in turns within every round (each setting over all images, then the next):

* ``eager``: how nightlab runs them (inference mode, contiguous tensors, torch's threads);
* ``channels_last``: weights and inputs in NHWC (oneDNN's preferred layout);
* ``1 thread``: ``torch.set_num_threads(1)`` (small convolutions may not pay for a second thread);
* ``TorchScript frozen``: ``torch.jit.trace`` + ``freeze`` + ``optimize_for_inference`` (batch norm
  folded into the convolutions, oneDNN weight pre-packing);
* ``torch.compile``: inductor, static shapes (compiled once per model on the first input, that
  compile time not counted; an input of another shape would compile again).

ONNX Runtime is measured by the onnx benchmark. Forward passes only, medians over rounds then images.
"""
from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import torch

from nightlab.inference import model_input, region_inputs, takes_prior
from nightlab.predict import TwoLevel

SETTINGS = ("eager", "channels_last", "1 thread", "TorchScript frozen", "torch.compile")


def _frozen(model, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notices
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example)))


def _timed(fn, x) -> float:
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


def _each(fn):
    """``fn`` over one image's list of input batches (each a tuple of the model's inputs)."""
    return lambda batches: [fn(*x) for x in batches]


def measure(two: TwoLevel, images: list[np.ndarray], repeat: int, settings=SETTINGS) -> dict:
    """Median ms per image of each setting (of ``settings``, "eager" among them) for the image model and the
    region model, and each setting's ratio to eager (< 1: faster)."""
    threads = torch.get_num_threads()
    with torch.inference_mode():
        m = two.models
        # per image, a list of input batches: one for the image model, one per view shape for the region
        # model (rectangular views come in several shapes, region_inputs)
        inputs = {"image": [[(model_input(img, m.image_scale, m.device),)] for img in images],
                  "region": [region_inputs(img, first.boxes, m.rule, first.logits if takes_prior(m.region) else None)
                             for img in images for first in (two.first_level(img),)]}
        inputs["region"] = [x for x in inputs["region"] if len(x)]
        models = {"image": m.image, "region": m.region}
        runs = {}
        for part, model in models.items():
            first = inputs[part][0][0]
            cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
            compiled = torch.compile(copy.deepcopy(model), dynamic=False)
            runs[part] = {s: _each(fn) for s, fn in {
                "eager": model,
                "channels_last": lambda *x, cl=cl: cl(*(t.contiguous(memory_format=torch.channels_last) for t in x)),
                "1 thread": model,
                "TorchScript frozen": _frozen(model, first),
                "torch.compile": compiled,
            }.items() if s in settings}
        times = {(part, s): np.zeros((repeat, len(inputs[part]))) for part in models for s in settings}
        for part in models:
            for s, fn in runs[part].items():  # warm-up; torch.compile compiles here, once per input shape
                for x in inputs[part] if s == "torch.compile" else inputs[part][:2]:
                    fn(x)
        try:  # each round runs every setting in turn, over all images: a thread-count switch is never timed
            for r in range(repeat):
                for part in models:
                    for s, fn in runs[part].items():
                        torch.set_num_threads(1 if s == "1 thread" else threads)
                        fn(inputs[part][0])  # untimed: the first call after a switch
                        for i, x in enumerate(inputs[part]):
                            times[part, s][r, i] = _timed(fn, x)
        finally:
            torch.set_num_threads(threads)
    med = {f"{part}.{s}": float(np.median(np.median(v, 0))) for (part, s), v in times.items()}
    return {"median_s": med, "threads": threads,
            "ratio": {k: v / med[f"{k.split('.')[0]}.eager"] for k, v in med.items()},
            "region_views": float(np.mean([sum(len(b[0]) for b in x) for x in inputs["region"]]))}
