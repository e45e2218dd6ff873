"""Torch datasets: whole images at ``image_scale`` (image model) and zoomed box crops (region model).

Both decode once and keep samples in memory as uint8 (the default data is small; a real
dataset can turn ``cache`` off). Augmentation uses torchvision.transforms.v2 with
``tv_tensors.Mask`` so flips and crops move image and labels together. Every sample's random
draws are seeded by (seed, epoch, index), so a run is reproducible whatever the worker count and
a resumed run sees exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from nightlab.data.manifest import Manifest
from nightlab.labels import IGNORE


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
    """Whole images resized by ``scale``; returns (image float (3,h,w), trainIds long (h,w))."""

    def __init__(self, manifest: Manifest, scale: float, train: bool = False, crop=None, hflip: bool = True,
                 seed: int = 0):
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
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.m)

    def load(self, i: int):
        if i not in self._cache:
            self._cache[i] = resize_pair(self.m.image(i), self.m.label(i), self.scale)
        return self._cache[i]

    def __getitem__(self, i: int):
        img, lab = self.load(i)
        x, y = to_tensor(img), tv_tensors.Mask(torch.from_numpy(lab).long())
        if self.tf is not None:
            x, y = self._seeded(i, lambda: self.tf(tv_tensors.Image(x), y))
        return x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)


def jitter_box(box, jitter: float, gen: torch.Generator, h: int, w: int):
    """Randomly shift and scale a box (x0, y0, x1, y1) by up to ``jitter`` of its size, then clip."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    r = (torch.rand(4, generator=gen) * 2 - 1) * jitter
    cx, cy = (x0 + x1) / 2 + r[0].item() * bw, (y0 + y1) / 2 + r[1].item() * bh
    bw, bh = bw * (1 + r[2].item()), bh * (1 + r[3].item())
    return (max(0.0, cx - bw / 2), max(0.0, cy - bh / 2), min(float(w), cx + bw / 2), min(float(h), cy + bh / 2))


def crop_resize(img: torch.Tensor, box, size: int, mask: bool = False) -> torch.Tensor:
    """Cut ``box`` (native pixels, x0 y0 x1 y1) out of a (C,H,W) tensor and resize it to size x size."""
    x0, y0, x1, y1 = box
    top, left = int(np.floor(y0)), int(np.floor(x0))
    height, width = max(1, int(np.ceil(y1)) - top), max(1, int(np.ceil(x1)) - left)
    mode = v2.InterpolationMode.NEAREST if mask else v2.InterpolationMode.BILINEAR
    return TF.resized_crop(img, top, left, height, width, [size, size], interpolation=mode, antialias=not mask)


class RegionDataset(_Seeded):
    """Crops of context boxes from native-resolution images, resized to ``size`` (a zoom-in).

    ``boxes`` is a frame with columns sample (manifest row), x0, y0, x1, y1 in native pixels.
    """

    def __init__(self, manifest: Manifest, boxes, size: int, train: bool = False, jitter: float = 0.0,
                 hflip: bool = True, seed: int = 0):
        super().__init__(seed)
        self.m, self.size, self.train, self.jitter, self.hflip = manifest, size, train, jitter, hflip
        self.boxes = boxes[["sample", "x0", "y0", "x1", "y1"]].to_numpy(dtype=np.float64)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.color = v2.ColorJitter(brightness=0.2, contrast=0.2)

    def __len__(self) -> int:
        return len(self.boxes)

    def load(self, s: int):
        if s not in self._cache:
            img, lab = self.m.image(s), self.m.label(s)
            self._cache[s] = (torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(lab)[None])
        return self._cache[s]

    def __getitem__(self, i: int):
        s, *box = self.boxes[i]
        img, lab = self.load(int(s))
        h, w = lab.shape[-2:]
        if self.train:
            gen = self._generator(i)
            box = jitter_box(box, self.jitter, gen, h, w)
        x = crop_resize(img, box, self.size).float().div_(255)
        y = crop_resize(lab, box, self.size, mask=True)[0].long()
        if self.train:
            if self.hflip and torch.rand(1, generator=gen).item() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            x = self._seeded(i, lambda: self.color(x))
        return x, y


class DetectionDataset(_Seeded):
    """Whole images at ``scale`` with their target boxes, for the RDN.

    ``boxes`` has columns sample, x0, y0, x1, y1 in native pixels; they are scaled with the image
    and flipped with it through ``tv_tensors.BoundingBoxes``. Returns (image, {"boxes": (K, 4)}).
    """

    def __init__(self, manifest: Manifest, boxes, scale: float, train: bool = False, hflip: bool = True,
                 seed: int = 0):
        super().__init__(seed)
        self.m, self.scale = manifest, scale
        self.samples = np.arange(len(manifest))
        grouped = {int(s): g[["x0", "y0", "x1", "y1"]].to_numpy(np.float32) for s, g in boxes.groupby("sample")}
        self.targets = [grouped.get(int(s), np.zeros((0, 4), np.float32)) * scale for s in self.samples]
        self.tf = v2.RandomHorizontalFlip() if train and hflip else None
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = resize_pair(self.m.image(i), None, self.scale)[0]
        return self._cache[i]

    def __getitem__(self, i: int):
        img = to_tensor(self.load(i))
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(self.targets[i]), format="XYXY", canvas_size=img.shape[-2:])
        if self.tf is not None:
            img, boxes = self._seeded(i, lambda: self.tf(tv_tensors.Image(img), boxes))
        return img.as_subclass(torch.Tensor), {"boxes": boxes.as_subclass(torch.Tensor)}


def detection_collate(batch):
    """Images of one size stack into a batch; targets stay a list (their box counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
