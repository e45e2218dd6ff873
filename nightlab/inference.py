"""Inference for both levels, shared by evaluation, HDM, merging and ``nightlab predict``.

The image model runs once per image at ``image_scale`` (or, with a ``window``, over overlapping
tiles of the scaled image) and its probabilities are upsampled to native size; the region model
runs on batches of views of the boxes (nightlab.regions: zoomed in, never out), and its
probabilities are pasted back onto each box at native size.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from nightlab.data.dataset import resize_pair, to_tensor
from nightlab.regions import CropRule, assemble, cut, cut_field, int_box, paste, views


def tile_starts(size: int, tile: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` (<= size) covering ``size``, at a stride of half the tile;
    the last tile ends at the border."""
    starts = list(range(0, size - tile + 1, max(1, tile // 2)))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


@torch.inference_mode()
def window_logits(model, x: torch.Tensor, window: tuple[int, int] | None = None) -> torch.Tensor:
    """Logits (N, C, H, W) of ``model`` on ``x`` (N, 3, H, W) as float32.

    With ``window`` (h, w) and an input larger than it, the model runs on overlapping tiles of at most
    that size (stride half the window, the last tile flush with the border), one tile at a time, and the
    logits are averaged where tiles overlap. An input that fits the window is one whole pass.
    """
    height, width = x.shape[-2:]
    th, tw = (height, width) if window is None else (min(int(window[0]), height), min(int(window[1]), width))
    if (th, tw) == (height, width):
        return model(x).float()
    total = count = None
    for y in tile_starts(height, th):
        for x0 in tile_starts(width, tw):
            logits = model(x[..., y:y + th, x0:x0 + tw]).float()
            if total is None:
                total = logits.new_zeros((*logits.shape[:2], height, width))
                count = logits.new_zeros((1, 1, height, width))
            total[..., y:y + th, x0:x0 + tw] += logits
            count[..., y:y + th, x0:x0 + tw] += 1
    return total / count


def model_input(image: np.ndarray, scale: float, device) -> torch.Tensor:
    """An RGB uint8 image (H, W, 3) as the image model and the RDN take it: (1, 3, h, w) float in [0, 1] at
    ``scale`` (area filter), on ``device``."""
    small, _ = resize_pair(image, None, scale)
    return to_tensor(small)[None].to(device)


def native_probs(logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Softmax at native size (C, h, w) of one image's logits (1, C, h', w')."""
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0].softmax(0)


def native_proposals(boxes: list[torch.Tensor], scores: list[torch.Tensor], scale: float, i: int = 0):
    """Image ``i``'s proposals in native pixels (float64 numpy): (boxes (K, 4), scores (K,))."""
    return boxes[i].cpu().double().numpy() / scale, scores[i].cpu().double().numpy()


@torch.inference_mode()
def image_logits(model, image: np.ndarray, scale: float, device, window: tuple[int, int] | None = None
                 ) -> torch.Tensor:
    """The image model's logits on the scaled image: (1, C, h, w) float on ``device``.

    ``window``: tile the scaled image (``image_model.window``, model-input pixels; see window_logits).
    """
    return window_logits(model, model_input(image, scale, device), window)


@torch.inference_mode()
def image_probs(model, image: np.ndarray, scale: float, device, window: tuple[int, int] | None = None
                ) -> torch.Tensor:
    """Softmax of the image model at native size: (C, H, W) float on ``device`` (``window``: image_logits)."""
    h, w = image.shape[:2]
    return native_probs(image_logits(model, image, scale, device, window), h, w)


def class_map(probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel class ids (H, W) of (C, H, W) scores: ``argmax(0)``, first maximum on ties, as ``max(0)``
    computes it 3-4x faster than ``argmax(0)`` on CPU (torch 2.14, 19 x 256 x 512)."""
    return probs.max(0).indices


@torch.inference_mode()
def image_logits_and_proposals(model, rdn, image: np.ndarray, scale: float, device):
    """:func:`image_logits` and :func:`propose` in one backbone pass, for an RDN whose backbone is the
    image model's (``rdn.backbone: shared``, see :func:`nightlab.models.rdn.shares_backbone`):
    (logits, (boxes, scores))."""
    x = model_input(image, scale, device)
    feats, _, _ = model.features(x)
    logits = model.decode(feats, x.shape[-2:]).float()
    objectness, deltas = rdn.rpn.head(list(rdn.backbone.neck(feats).values()))
    boxes, scores, _ = rdn.proposals(x, objectness, deltas)
    return logits, native_proposals(boxes, scores, scale)


def plan_views(shape: tuple[int, ...], boxes, rule: CropRule) -> tuple[list[tuple[int, int, int, int]], list[list]]:
    """The integer boxes of an image of ``shape`` (H, W, ...) and each box's views (nightlab.regions)."""
    h, w = shape[:2]
    boxes = [int_box(b, h, w) for b in np.asarray(boxes, dtype=float).reshape(-1, 4)]
    return boxes, [views(b, h, w, rule) for b in boxes]


def view_batch(img: torch.Tensor, wins) -> torch.Tensor:
    """The views ``wins`` (one input shape) of a (3, H, W) uint8 image as the region model's input:
    (N, 3, h, w) in [0, 1]."""
    return torch.stack([cut(img, win) for win in wins]).div_(255)


def prior_batch(prior: torch.Tensor, wins, native: tuple[int, int]) -> torch.Tensor:
    """The image model's logits of one image ((1, C, h, w)) cut to each of the views ``wins``, beside
    :func:`view_batch`: a PriorRefiner's second input, (N, C, h', w')."""
    return torch.stack([cut_field(prior[0], win, native) for win in wins])


def by_shape(views_, batch_size: int) -> list[list]:
    """``views_`` (views, or (key, view) pairs) in batches of one input shape each, at most ``batch_size`` long:
    the shapes in the order they first appear, each shape's views in their own order."""
    groups: dict[tuple[int, int], list] = {}
    for item in views_:
        win = item[1] if isinstance(item, tuple) else item
        groups.setdefault(win.shape, []).append(item)
    return [g[k:k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]


def region_inputs(image: np.ndarray, boxes, rule: CropRule, prior: torch.Tensor | None = None
                  ) -> list[tuple[torch.Tensor, ...]]:
    """Every view of every box as the region model gets them from :func:`region_probs`, one batch per input
    shape, each batch the tuple of the model's inputs: the views, and with ``prior`` (the image model's
    logits of this image, for a PriorRefiner) their cut of it. What the benchmarks time the region model on."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    _, plans = plan_views(image.shape, boxes, rule)
    batches = by_shape([w for wins in plans for w in wins], 10**9)
    if prior is None:
        return [(view_batch(img, chunk),) for chunk in batches]
    return [(view_batch(img, chunk), prior_batch(prior, chunk, image.shape[:2])) for chunk in batches]


def batch_independent(model, *inputs: torch.Tensor) -> torch.Tensor:
    """``model(*inputs)``, with a batch of one run as a batch of two: oneDNN takes another path for a single
    sample (results differ in the last bits), and a region's prediction must not depend on how many other
    regions share its batch, or two-level prediction and evaluation could differ."""
    if len(inputs[0]) == 1:
        return model(*(t.expand(2, *t.shape[1:]) for t in inputs))[:1]
    return model(*inputs)


@torch.inference_mode()
def region_probs(model, image: np.ndarray, boxes, rule: CropRule, device, batch_size: int = 32,
                 prior: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Softmax of the region model for each box, at the box's native size: list of (C, bh, bw).

    Every view of every box (nightlab.regions) goes through the model in batches of ``batch_size`` views of
    one input shape. A region model that refines the image level (a PriorRefiner) needs ``prior``, the
    image model's logits on this image ((1, C, h, w), :func:`image_logits`), cut to each view.
    """
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    boxes, plans = plan_views(image.shape, boxes, rule)
    flat = [((i, j), win) for i, wins in enumerate(plans) for j, win in enumerate(wins)]
    pieces: list[list] = [[None] * len(wins) for wins in plans]  # by view: batches come grouped by shape
    needs_prior = takes_prior(model)
    if needs_prior and prior is None:
        raise ValueError("this region model refines the image level: pass the image model's logits (prior)")
    for chunk in by_shape(flat, batch_size):
        wins = [win for _, win in chunk]
        x = view_batch(img, wins).to(device)
        priors = [prior_batch(prior, wins, image.shape[:2])] if needs_prior else []
        out = batch_independent(model, x, *priors)
        for ((i, j), win), q in zip(chunk, out.softmax(1)):
            pieces[i][j] = paste(q, win)
    return [assemble(pieces[i], plans[i], boxes[i]) for i in range(len(boxes))]


def takes_prior(model) -> bool:
    """Whether a region model refines the image level's prediction (nightlab.models.segnet.PriorRefiner)."""
    return hasattr(model, "prior_proj")


@torch.inference_mode()
def propose(rdn, images: Iterable[np.ndarray], scale: float, device, top_n: int | None = None,
            anchors: bool = False):
    """RDN proposals for each image (any iterable: a generator keeps one decoded image in memory), in native
    pixels, sorted by objectness: [(boxes (K,4), scores (K,))]; with ``anchors``, [(boxes, scores, anchor
    index (K,))], the anchor each proposal was decoded from (nightlab.models.rdn.filter_with_anchors)."""
    out = []
    for image in images:
        boxes, scores, picked, _ = rdn(model_input(image, scale, device), with_anchors=True)
        b, s = native_proposals(boxes, scores, scale)
        found = (b[:top_n], s[:top_n], picked[0].cpu().numpy()[:top_n])
        out.append(found if anchors else found[:2])
    return out
