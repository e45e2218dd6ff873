"""Torch datasets: whole images at ``image_scale`` (image model), zoomed box crops (region model)
and whole images with their boxes (RDN).

Decoded frames (uint8, after the dataset's resize) go through a :class:`FrameCache` bounded in
bytes (``cache_mb`` of the train configs, in MiB). A dataset whose decoded frames fit in the
bound is decoded once, as if everything were kept (the default data: 320 training frames of
256x512 hold 40 MiB for the image model at scale 0.5, 30 MiB for the RDN and 160 MiB for the
region model at native size, under the default 512). Of a larger one the cache keeps the first
frames loaded, up to the bound, and the others are decoded each time they are read
(least-recently-used eviction would serve far fewer reads in shuffled epochs: see FrameCache);
``cache_mb: 0`` decodes every sample on demand. Memory therefore does not grow with the dataset.
The cache holds decoded frames only, never augmented samples, and decoding is deterministic: a
sample is the same array whether it came from the cache or from disk.

With data-loader workers, each worker process has its own cache of ``cache_mb / workers``; the
training loop starts new workers every epoch (persistent_workers=False), so their caches only
help within an epoch (the region model's crops of one frame).

Augmentation uses torchvision.transforms.v2 with ``tv_tensors.Mask`` so flips and crops move
image and labels together. Every sample's random draws are seeded by (seed, epoch, index), so a
run is reproducible whatever the worker count and a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2

from nightlab.data.manifest import Manifest
from nightlab.labels import IGNORE
from nightlab.regions import CropRule, View, cut, cut_field, views


def resize_pair(img: np.ndarray, lab: np.ndarray | None, scale: float):
    """Downscale an RGB image (area filter) and its labels (nearest) by ``scale``."""
    if scale == 1.0:
        return img, lab
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    lab = None if lab is None else cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST)
    return img, lab


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)


def nbytes(value) -> int:
    """Bytes of the arrays and tensors in ``value`` (nested tuples/lists)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return 0


class FrameCache:
    """Decoded frames by key, at most ``max_bytes`` in all.

    ``policy="first"`` (what the datasets use) keeps the frames it loads first until the bound is
    reached and never evicts: the others are decoded on demand. A training epoch visits every frame
    once in a random order, so a cache holding a fraction f of the frames serves a fraction f of
    each later epoch; least-recently-used eviction (``policy="lru"``) would serve about f squared
    (it holds each epoch's last frames, and evicts them before the next epoch comes back to them)
    for the same memory (benches/loading.py measures both). A frame larger than the whole bound is
    returned but not kept. In a data-loader worker the bound is shared: each of the
    ``num_workers`` processes keeps at most ``max_bytes / num_workers``.
    """

    def __init__(self, max_bytes: int, policy: str = "first"):
        if policy not in ("first", "lru"):
            raise ValueError(f"unknown cache policy {policy!r}: first or lru")
        self.max_bytes, self.policy = int(max_bytes), policy
        self._items: OrderedDict = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    @property
    def limit(self) -> int:
        """The bound in this process."""
        info = get_worker_info()
        return self.max_bytes // info.num_workers if info is not None else self.max_bytes

    def get(self, key, load: Callable):
        """The frame under ``key``, from the cache or from ``load()`` (then kept if the policy and bound allow)."""
        if key in self._items:
            if self.policy == "lru":
                self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        value = load()
        size, limit = nbytes(value), self.limit
        if self.policy == "lru" and size <= limit:
            while self._items and self.nbytes + size > limit:
                _, old = self._items.popitem(last=False)
                self.nbytes -= nbytes(old)
        if size > 0 and self.nbytes + size <= limit:
            self._items[key] = value
            self.nbytes += size
        return value

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def _cache_bytes(cache_mb: float) -> int:
    if cache_mb < 0:
        raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
    return int(cache_mb * 2**20)


class _Seeded(Dataset):
    def __init__(self, seed: int):
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF)

    def _seeded(self, index: int, fn):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF)
            return fn()


class ImageDataset(_Seeded):
    """Whole images resized by ``scale``; returns (image float (3,h,w), trainIds long (h,w)).

    ``cache_mb``: bound of the decoded-frame cache (module docstring).
    """

    def __init__(self, manifest: Manifest, scale: float, train: bool = False, crop=None, hflip: bool = True,
                 seed: int = 0, cache_mb: float = 512):
        super().__init__(seed)
        self.m, self.scale, self.train = manifest, scale, train
        ops = []
        if train and hflip:
            ops.append(v2.RandomHorizontalFlip())
        if train and crop:
            ops.append(v2.RandomCrop(tuple(crop), pad_if_needed=True, fill={tv_tensors.Mask: IGNORE, "others": 0}))
        if train:
            ops.append(v2.ColorJitter(brightness=0.2, contrast=0.2))
        self.tf = v2.Compose(ops) if ops else None
        self.cache = FrameCache(_cache_bytes(cache_mb))

    def __len__(self) -> int:
        return len(self.m)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (h, w, 3) and trainIds (h, w) at ``scale``, uint8."""
        return self.cache.get(i, lambda: resize_pair(self.m.image(i), self.m.label(i), self.scale))

    def __getitem__(self, i: int):
        img, lab = self.load(i)
        x, y = to_tensor(img), tv_tensors.Mask(torch.from_numpy(lab).long())
        if self.tf is not None:
            x, y = self._seeded(i, lambda: self.tf(tv_tensors.Image(x), y))
        return x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)


@dataclass(frozen=True)
class ViewAugment:
    """How training views vary: shifted and scaled by up to ``jitter`` of their size, flipped (``hflip``),
    and, for a region model that refines the image level, Gaussian noise of s.d. ``prior_noise`` on the
    image model's logits."""
    jitter: float = 0.0
    hflip: bool = True
    prior_noise: float = 0.0


class RegionDataset(_Seeded):
    """Region-model training samples: each context box shown as nightlab.regions shows it at
    inference (views around the box or its tiles, zoomed in, never out), resized to the view's input
    shape. With ``train``, each view is jittered, flipped and colour-jittered (``augment``), seeded by
    (seed, epoch, index); views of one shape share a batch (``groups``, nightlab.train).

    ``boxes`` is a frame with columns sample (manifest row), x0, y0, x1, y1 in native pixels; the
    labels of the whole view (context included) are the target. ``cache_mb``: bound of the
    decoded-frame cache (module docstring); frames are native size. ``prior``: the image model's
    logits of each sample ({sample: (C, h, w)}), for a region model that refines them: a sample is then
    ((view, logits cut to the view), labels).
    """

    def __init__(self, manifest: Manifest, boxes, rule: CropRule, train: bool = False,
                 augment: ViewAugment = ViewAugment(), seed: int = 0, cache_mb: float = 512, prior: dict | None = None):
        super().__init__(seed)
        self.m, self.rule, self.train, self.augment, self.prior = manifest, rule, train, augment, prior
        rows = boxes[["sample", "x0", "y0", "x1", "y1"]].to_numpy(dtype=np.float64)
        hw = list(zip(manifest.df.height.astype(int), manifest.df.width.astype(int)))
        self.items = [(int(r[0]), win) for r in rows for win in views(r[1:], *hw[int(r[0])], rule)]
        self.groups = [win.shape for _, win in self.items]  # views of one input shape share a batch
        self.cache = FrameCache(_cache_bytes(cache_mb))
        self.color = v2.ColorJitter(brightness=0.2, contrast=0.2)

    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lab = self.m.image(s), self.m.label(s)
        return torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(lab)[None]

    def load(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (3, H, W) and trainIds (1, H, W) of manifest row ``s`` at native size, uint8."""
        return self.cache.get(s, lambda: self._decode(s))

    def __getitem__(self, i: int):
        s, win = self.items[i]
        img, lab = self.load(s)
        aug = self.augment
        if self.train:
            gen = self._generator(i)
            win = jitter_view(win, aug.jitter, gen)
        x = cut(img, win).div_(255)
        y = cut(lab, win, mask=True)[0].long()
        p = None if self.prior is None else cut_field(self.prior[s].float(), win, tuple(img.shape[-2:]))
        if self.train:
            if aug.hflip and torch.rand(1, generator=gen).item() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
                p = None if p is None else p.flip(-1)
            x = self._seeded(i, lambda: self.color(x))
            if p is not None and aug.prior_noise > 0:
                p = p + aug.prior_noise * torch.randn(p.shape, generator=gen)
        return ((x, p) if p is not None else x), y


def jitter_view(win: View, jitter: float, gen: torch.Generator) -> View:
    """Shift a view by up to ``jitter`` of its size and scale it by up to 1 +- ``jitter`` (its aspect kept)."""
    x0, y0, x1, y1 = win.rect
    vw = x1 - x0
    vh = vw * win.shape[0] / win.shape[1]  # = y1 - y0 (for a square, exactly the width, as version 1 had it)
    r = (torch.rand(3, generator=gen) * 2 - 1) * jitter
    cx, cy = (x0 + x1) / 2 + r[0].item() * vw, (y0 + y1) / 2 + r[1].item() * vh
    vw, vh = vw * (1 + r[2].item()), vh * (1 + r[2].item())
    return View(win.tile, (cx - vw / 2, cy - vh / 2, cx + vw / 2, cy + vh / 2), win.shape)


class DetectionDataset(_Seeded):
    """Whole images at ``scale`` with their target boxes, for the RDN.

    ``boxes`` has columns sample, x0, y0, x1, y1 in native pixels; they are scaled with the image
    and flipped with it through ``tv_tensors.BoundingBoxes``. Returns (image, {"boxes": (K, 4)}).
    ``cache_mb``: bound of the decoded-frame cache (module docstring). ``anchor_labels`` ({sample:
    (anchor indices, objectness targets)}, HDM's relabelled proposals) adds ``anchors`` and ``labels`` to
    the targets; anchors are indices into the unflipped image's anchor grid, so such a dataset never flips.
    """

    def __init__(self, manifest: Manifest, boxes, scale: float, train: bool = False, hflip: bool = True,
                 seed: int = 0, cache_mb: float = 512, anchor_labels: dict | None = None):
        super().__init__(seed)
        self.m, self.scale, self.anchor_labels = manifest, scale, anchor_labels
        self.samples = np.arange(len(manifest))
        grouped = {int(s): g[["x0", "y0", "x1", "y1"]].to_numpy(np.float32) for s, g in boxes.groupby("sample")}
        self.targets = [grouped.get(int(s), np.zeros((0, 4), np.float32)) * scale for s in self.samples]
        self.tf = v2.RandomHorizontalFlip() if train and hflip and anchor_labels is None else None
        self.cache = FrameCache(_cache_bytes(cache_mb))

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def collate(batch):
        """How the training loop batches this dataset's samples (nightlab.train.fit reads it)."""
        return detection_collate(batch)

    def load(self, i: int) -> np.ndarray:
        """Image (h, w, 3) at ``scale``, uint8."""
        return self.cache.get(i, lambda: resize_pair(self.m.image(i), None, self.scale)[0])

    def __getitem__(self, i: int):
        img = to_tensor(self.load(i))
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(self.targets[i]), format="XYXY", canvas_size=img.shape[-2:])
        if self.tf is not None:
            img, boxes = self._seeded(i, lambda: self.tf(tv_tensors.Image(img), boxes))
        target = {"boxes": boxes.as_subclass(torch.Tensor)}
        if self.anchor_labels is not None:
            idx, labels = self.anchor_labels.get(int(self.samples[i]), (np.zeros(0, np.int64), np.zeros(0)))
            target["anchors"] = torch.as_tensor(idx, dtype=torch.long)
            target["labels"] = torch.as_tensor(labels, dtype=torch.float32)
        return img.as_subclass(torch.Tensor), target


def detection_collate(batch):
    """Images of one size stack into a batch; targets stay a list (their box counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
