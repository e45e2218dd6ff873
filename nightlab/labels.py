"""The Cityscapes label table, taken from cityscapesscripts (never a hand-typed copy).

In memory every label map is a ``uint8`` array of trainIds in [0, 18], 255 = ignore.
"""
from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE = 255

TRAIN_LABELS = sorted((lab for lab in _CS_LABELS if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
NUM_CLASSES = len(TRAIN_LABELS)  # 19
CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in TRAIN_LABELS)
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
LABEL_IDS: dict[str, int] = {lab.name: lab.id for lab in _CS_LABELS if lab.id >= 0}
# Classes whose pixels carry instance ids (id * 1000 + k) in *_instanceIds.png.
INSTANCE_CLASSES: frozenset[str] = frozenset(lab.name for lab in TRAIN_LABELS if lab.hasInstances)

# labelId (0..33; -1 is licence plate, never written to disk) -> trainId lookup table.
ID_TO_TRAINID = np.full(256, IGNORE, dtype=np.uint8)
for _lab in _CS_LABELS:
    if 0 <= _lab.id < 256:
        ID_TO_TRAINID[_lab.id] = _lab.trainId if 0 <= _lab.trainId < 255 else IGNORE
VALID_LABEL_IDS = frozenset(lab.id for lab in _CS_LABELS if lab.id >= 0)

TRAINID_TO_ID = np.zeros(256, dtype=np.uint8)  # ignore -> 0 ("unlabeled")
for _lab in TRAIN_LABELS:
    TRAINID_TO_ID[_lab.trainId] = _lab.id

PALETTE = np.zeros((256, 3), dtype=np.uint8)  # RGB; ignore stays black
for _lab in TRAIN_LABELS:
    PALETTE[_lab.trainId] = _lab.color


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return ID_TO_TRAINID[label_ids]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    return TRAINID_TO_ID[train_ids]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """trainIds (H, W) -> RGB uint8 (H, W, 3) in the Cityscapes colours."""
    return PALETTE[train_ids]


def class_ids(names) -> list[int]:
    unknown = [n for n in names if n not in CLASS_IDS]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; known: {', '.join(CLASS_NAMES)}")
    return [CLASS_IDS[n] for n in names]
