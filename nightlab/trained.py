"""A trained two-level system in one object: the image model with its scale and sliding window, the
region model with its crop rule, and the detectors with their scales, as every stage, the
benchmarks and ``nightlab predict`` load them (docs/design.md 1.7).

A model directory holds ``model.pt`` and ``config.json`` (nightlab.models.store); a system's
directory holds one per part: ``image/``, ``region/`` and a directory per detector (``rdn/``,
``hdm/``), the layout of the pipeline's ``models/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nightlab.inference import (
    image_logits,
    image_logits_and_proposals,
    native_probs,
    propose,
    region_probs,
    takes_prior,
)
from nightlab.models.rdn import RDN, load_rdn, shares_backbone
from nightlab.models.store import load_image_model, load_seg_model
from nightlab.regions import CropRule

IMAGE, REGION = "image", "region"  # the parts' directory names under a system's directory


@dataclass
class Detector:
    model: RDN
    scale: float  # the RDN's image_scale: it runs on the image resized by this

    def propose(self, images, device, top_n: int | None = None, anchors: bool = False) -> list[tuple]:
        """Proposals (native pixels, by objectness) on each of ``images`` (any iterable): (boxes, scores), and
        with ``anchors`` the index of the anchor each came from."""
        return propose(self.model, images, self.scale, device, top_n, anchors)


@dataclass
class TrainedModels:
    """The loaded models of a two-level system, on ``device``, in eval mode."""
    image: torch.nn.Module
    image_scale: float
    device: torch.device
    window: tuple[int, int] | None = None  # image_model.window: the image model runs as overlapping tiles
    region: torch.nn.Module | None = None
    rule: CropRule | None = None  # how a box becomes the region model's views
    detectors: dict[str, Detector] = field(default_factory=dict)

    @classmethod
    def load(cls, image: str | Path, device="cpu", window=None, region: str | Path | None = None,
             detectors: dict[str, str | Path] | None = None) -> TrainedModels:
        """The parts named (model directories), the others left out."""
        device = torch.device(device)
        image_model, icfg = load_image_model(image, device)
        models = cls(image_model, float(icfg["image_scale"]), device, None if window is None else tuple(window))
        if region is not None:
            models.region, rcfg = load_seg_model(region, device)
            models.rule = CropRule.of(rcfg)
        for name, path in (detectors or {}).items():
            model, dcfg = load_rdn(path, device)
            models.detectors[name] = Detector(model, float(dcfg["image_scale"]))
        return models

    @classmethod
    def from_dir(cls, root: str | Path, device="cpu", window=None, detectors=("rdn", "hdm")) -> TrainedModels:
        """A whole system from ``root`` (``image/``, ``region/`` and one directory per detector)."""
        root = Path(root)
        return cls.load(root / IMAGE, device, window, root / REGION, {d: root / d for d in detectors})

    # ----------------------------------------------------------------------------- inference

    def image_logits(self, image: np.ndarray) -> torch.Tensor:
        """The image model's logits on the scaled image (1, C, h, w)."""
        return image_logits(self.image, image, self.image_scale, self.device, self.window)

    def image_probs(self, image: np.ndarray) -> torch.Tensor:
        """The image model's softmax at native size (C, H, W)."""
        return native_probs(self.image_logits(image), *image.shape[:2])

    def propose(self, name: str, images, top_n: int | None = None, anchors: bool = False) -> list[tuple]:
        """Detector ``name``'s proposals (native pixels, by objectness) on each of ``images`` (any iterable)."""
        return self.detectors[name].propose(images, self.device, top_n, anchors)

    def region_probs(self, image: np.ndarray, boxes, batch_size: int, logits: torch.Tensor | None = None
                     ) -> list[torch.Tensor]:
        """The region model's softmax on each box at its native size: [(C, bh, bw)]. A region model that
        refines the image level reads the image model's ``logits`` of this image (computed when not given)."""
        if logits is None and takes_prior(self.region) and len(boxes):
            logits = self.image_logits(image)
        return region_probs(self.region, image, boxes, self.rule, self.device, batch_size, logits)

    def one_pass(self, name: str) -> bool:
        """Whether detector ``name`` runs on the image model's own backbone at its scale (one pass for both)."""
        det = self.detectors[name]
        return shares_backbone(det.model, self.image) and det.scale == self.image_scale

    def tiled(self, image: np.ndarray) -> bool:
        """Whether the image model runs over tiles of this image (no whole-image features to share)."""
        return self.window is not None and any(round(s * self.image_scale) > int(wn)
                                               for s, wn in zip(image.shape[:2], self.window))

    def first_level(self, image: np.ndarray, name: str, fuse: bool = True):
        """The image model's logits (1, C, h, w) and detector ``name``'s proposals: (logits, (boxes, scores)),
        in one backbone pass when the detector shares the image model's (and ``fuse``), else in two; the
        same numbers either way (tests/test_predict.py)."""
        if fuse and self.one_pass(name) and not self.tiled(image):
            return image_logits_and_proposals(self.image, self.detectors[name].model, image, self.image_scale,
                                              self.device)
        return self.image_logits(image), self.propose(name, [image])[0]
