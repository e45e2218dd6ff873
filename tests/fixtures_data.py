"""Tiny datasets generated on the fly for tests: on disk in each supported layout, and in memory.

``make_dataset(kind, root)`` writes ``n`` images per split (``h`` x ``w``) in the layout the
adapter for ``kind`` expects and returns the dataset root. Label content is deterministic:
``expected_train_ids(kind, split, i, h, w)`` gives the trainIds (uint8, 255 = ignore) that
reading sample ``i`` back must produce, whatever the on-disk encoding. ``FlippedPairs`` is the
in-memory base of the training-loop tests.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from nightlab.labels import IGNORE, LABEL_IDS, NUM_CLASSES, train_ids_to_label_ids


class FlippedPairs(Dataset):
    """Fixed (image, mask) tensors ``self.x``, ``self.y`` set by a subclass; random flips seeded by
    (seed, epoch, index), like the real datasets."""

    seed, epoch = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch * 100 + i)
        x, y = self.x[i], self.y[i]
        if torch.rand(1, generator=g).item() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x, y


KINDS = ("cityscapes", "nightcity", "acdc", "darkzurich", "bdd100k", "folder")
# How each kind encodes labels on disk.
ENCODING = {"cityscapes": "labelIds", "nightcity": "labelIds", "acdc": "labelIds", "darkzurich": "labelIds",
            "bdd100k": "trainIds", "folder": "trainIds"}
CITY = "aachen"  # cityscapes city folder (not named day/night, so domain 'day')
SEQ = "GOPR0351"  # ACDC / Dark Zurich sequence folder


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def make_train_ids(h: int, w: int, seed: int) -> np.ndarray:
    """A deterministic trainId map: horizontal bands of a few classes, a box of another, some ignore."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(NUM_CLASSES, size=4, replace=False)
    lab = np.empty((h, w), np.uint8)
    for k, rows in enumerate(np.array_split(np.arange(h), 3)):
        lab[rows] = classes[k]
    lab[h // 4: h // 2, w // 4: w // 2] = classes[3]
    lab[-2:, :] = IGNORE  # e.g. the ego-vehicle hood
    return lab


def expected_train_ids(kind: str, split: str, i: int, h: int = 32, w: int = 64) -> np.ndarray:
    return make_train_ids(h, w, _seed(kind, split, i))


def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """A deterministic BGR uint8 image (what cv2.imwrite expects)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_instance_ids(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes-style instanceIds (uint16): labelId for stuff, labelId*1000+k for things."""
    label_ids = train_ids_to_label_ids(train_ids).astype(np.uint16)
    inst = label_ids.copy()
    things = {LABEL_IDS[n] for n in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")}
    for lid in np.unique(label_ids):
        if int(lid) in things:
            inst[label_ids == lid] = int(lid) * 1000
    inst[train_ids == IGNORE] = LABEL_IDS["ego vehicle"]
    return inst


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cv2.imwrite failed for {path}")


def _label_ids(train_ids: np.ndarray) -> np.ndarray:
    out = train_ids_to_label_ids(train_ids)
    out[train_ids == IGNORE] = LABEL_IDS["ego vehicle"]  # a labelId that maps to ignore
    return out


def sample_paths(kind: str, split: str, i: int) -> dict:
    """Relative paths of sample ``i`` of ``split`` in ``kind``'s layout (keys: image, label, instance)."""
    if kind == "cityscapes":
        stem = f"{CITY}_{i:06d}_000019"
        base = f"gtFine/{split}/{CITY}/{stem}_gtFine_"
        return dict(image=f"leftImg8bit/{split}/{CITY}/{stem}_leftImg8bit.png", label=base + "labelIds.png",
                    instance=base + "instanceIds.png", label_train_ids=base + "labelTrainIds.png")
    if kind == "nightcity":
        return dict(image=f"images/{split}/city_{i:04d}.png", label=f"label/{split}/city_{i:04d}_labelIds.png",
                    instance=None)
    if kind == "acdc":
        stem = f"{SEQ}_frame_{i:06d}"
        return dict(image=f"rgb_anon/night/{split}/{SEQ}/{stem}_rgb_anon.png",
                    label=f"gt/night/{split}/{SEQ}/{stem}_gt_labelIds.png", instance=None)
    if kind == "darkzurich":
        stem = f"{SEQ}_frame_{i:06d}"
        return dict(image=f"rgb_anon/{split}/night/{SEQ}/{stem}_rgb_anon.png",
                    label=f"gt/{split}/night/{SEQ}/{stem}_gt_labelIds.png", instance=None)
    if kind == "bdd100k":
        stem = f"{_seed(split, i):08x}-{i:08d}"
        return dict(image=f"images/10k/{split}/{stem}.jpg", label=f"labels/sem_seg/masks/{split}/{stem}.png",
                    instance=None)
    if kind == "folder":
        return dict(image=f"images/{split}/img_{i:03d}.png", label=f"masks/{split}/img_{i:03d}.png", instance=None)
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def make_dataset(kind: str, root: Path, splits=("train", "val"), n: int = 2, h: int = 32, w: int = 64) -> Path:
    """Write a tiny dataset of ``kind`` under ``root`` and return ``root``."""
    root = Path(root)
    for split in splits:
        for i in range(n):
            paths = sample_paths(kind, split, i)
            train_ids = expected_train_ids(kind, split, i, h, w)
            _write(root / paths["image"], make_image(h, w, _seed("img", kind, split, i)))
            if ENCODING[kind] == "labelIds":
                _write(root / paths["label"], _label_ids(train_ids))
            else:
                _write(root / paths["label"], train_ids)
            if kind == "cityscapes":
                _write(root / paths["instance"], make_instance_ids(train_ids))
                _write(root / paths["label_train_ids"], train_ids)
    return root
