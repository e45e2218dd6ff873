"""What every version of the synthetic generator shares: the label and colour tables, the scene
and its canvas, per-scene random streams, and writing a scene in the Cityscapes layout."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from nightlab.io import write_image, write_label
from nightlab.labels import CLASS_IDS, LABEL_IDS, train_ids_to_label_ids

C = CLASS_IDS
EGO = 254  # temporary marker for the ego-vehicle hood (written as labelId 1 = ignore)

# Day albedo (RGB, 0..1) per class, jittered per object.
BASE_COLOUR = {
    "road": (0.32, 0.30, 0.33), "sidewalk": (0.62, 0.55, 0.60), "building": (0.45, 0.42, 0.40),
    "wall": (0.60, 0.36, 0.26), "fence": (0.55, 0.50, 0.38), "pole": (0.50, 0.50, 0.52),
    "traffic light": (0.12, 0.12, 0.10), "traffic sign": (0.85, 0.80, 0.10),
    "vegetation": (0.20, 0.45, 0.15), "terrain": (0.50, 0.62, 0.30), "sky": (0.55, 0.70, 0.92),
    "person": (0.70, 0.20, 0.25), "rider": (0.20, 0.30, 0.75), "car": (0.15, 0.25, 0.55),
    "truck": (0.30, 0.45, 0.35), "bus": (0.75, 0.65, 0.20), "train": (0.55, 0.30, 0.50),
    "motorcycle": (0.10, 0.55, 0.60), "bicycle": (0.75, 0.35, 0.75),
}
# People of both classes wear the same clothes: as in real streets, a rider differs from a
# pedestrian only by context (sitting on a two-wheeler), which is what makes riders hard.
CLOTHES = [(0.70, 0.20, 0.25), (0.20, 0.30, 0.75), (0.55, 0.15, 0.45), (0.85, 0.35, 0.30)]


@dataclass
class Scene:
    label: np.ndarray  # (H, W) uint8 trainIds, EGO for the hood
    instance: np.ndarray  # (H, W) int32 Cityscapes instance ids (labelId*1000+k or labelId)
    albedo: np.ndarray  # (H, W, 3) float32
    lamps: list = field(default_factory=list)  # (x, y, radius, intensity, rgb) light sources
    emissive: np.ndarray | None = None  # (H, W, 3) float32 light emitted at night
    reflect: np.ndarray | None = None  # (H, W) float32 retro-reflective surfaces (version 2: signs)


class Canvas:
    def __init__(self, h: int, w: int, rng: np.random.Generator):
        self.h, self.w, self.rng = h, w, rng
        self.label = np.full((h, w), C["sky"], np.uint8)
        self.albedo = np.zeros((h, w, 3), np.float32)
        self.instance = np.zeros((h, w), np.int32)
        self.emissive = np.zeros((h, w, 3), np.float32)
        self.lamps: list = []
        self._next_inst: dict[str, int] = {}
        self._scratch = np.zeros((h, w), np.uint8)

    def colour(self, cls: str, jitter: float = 0.08) -> tuple:
        base = CLOTHES[self.rng.integers(len(CLOTHES))] if cls in ("person", "rider") else BASE_COLOUR[cls]
        base = np.array(base) + self.rng.normal(0, jitter, 3)
        return tuple(np.clip(base, 0.02, 0.98).tolist())

    def new_instance(self, cls: str) -> int:
        k = self._next_inst.get(cls, 0)
        self._next_inst[cls] = k + 1
        return LABEL_IDS[cls] * 1000 + k

    def fill(self, cls: str, draw, colour=None, inst: int | None = None, paint=None) -> None:
        """``draw(mask)`` rasterises a shape into a uint8 mask; the shape then overwrites the scene.

        With ``paint(mask)``, only the painted part of the shape changes colour: the rest is labelled
        as the object but keeps showing what is behind it (a bicycle's wheels, as Cityscapes
        annotators outline a bicycle with its wheels filled in).
        """
        m = self._scratch
        draw(m)
        x, y, bw, bh = cv2.boundingRect(m)  # work inside the shape's box only: ~10x faster
        if bw == 0:
            return
        box = (slice(y, y + bh), slice(x, x + bw))
        sel = m[box] > 0
        self.label[box][sel] = EGO if cls == "ego" else C[cls]
        self.instance[box][sel] = inst if inst is not None else (1 if cls == "ego" else LABEL_IDS[cls])
        m[box] = 0
        if paint is not None:
            paint(m)
            sel = sel & (m[box] > 0)
            px, py, pw, ph = cv2.boundingRect(m)
            m[py:py + ph, px:px + pw] = 0  # the paint may reach past the shape: clear all of it
        self.albedo[box][sel] = colour if colour is not None else self.colour(cls)
        self.emissive[box][sel] = 0

    def glow(self, x: float, y: float, r: float, rgb, intensity: float = 1.0) -> None:
        rgb = tuple(float(c) * intensity for c in rgb)
        cv2.circle(self.emissive, (int(x), int(y)), max(1, int(r)), rgb, -1, cv2.LINE_AA)


def _person(x, y, pw, ph, leg: int, waist: float, head: float, head_r: float):
    """A mask painter for a standing person at foot point (x, y), ``pw`` x ``ph`` pixels: coat from 0.82 of
    the height down to ``waist``, two legs ``leg`` pixels wide below it, a head at ``head`` of the height
    with radius ``head_r`` of the width (fractions: the two generator versions differ in them)."""
    def draw(msk):
        cv2.rectangle(msk, (int(x - pw / 2), int(y - ph * 0.82)), (int(x + pw / 2), int(y - ph * waist)), 1, -1)
        cv2.rectangle(msk, (int(x - pw / 2), int(y - ph * waist)), (int(x - pw / 2) + leg, int(y)), 1, -1)
        cv2.rectangle(msk, (int(x + pw / 2) - leg, int(y - ph * waist)), (int(x + pw / 2), int(y)), 1, -1)
        cv2.circle(msk, (int(x), int(y - ph * head)), max(1, int(pw * head_r)), 1, -1)
    return draw


def _rect(x0, y0, x1, y1):
    return lambda m: cv2.rectangle(m, (int(x0), int(y0)), (int(x1), int(y1)), 1, -1)


def _poly(pts):
    return lambda m: cv2.fillPoly(m, [np.round(np.asarray(pts)).astype(np.int32)], 1)



def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def scene_name(split: str, index: int) -> str:
    return f"synth_{split}_{index:05d}"


def write_scene(out: Path, split: str, index: int, scene: Scene, images: dict[str, np.ndarray]) -> list[dict]:
    """Write one scene's renderings ({domain: RGB}) and its labels in the Cityscapes layout.

    Returns the manifest rows (paths relative to ``out``).
    """
    h, w = scene.label.shape
    label_ids = train_ids_to_label_ids(scene.label)
    label_ids[scene.label == EGO] = LABEL_IDS["ego vehicle"]
    inst = scene.instance.astype(np.uint16)
    rows = []
    for domain, image in images.items():
        name = f"{scene_name(split, index)}_{domain}"
        img_rel = Path("leftImg8bit") / split / domain / f"{name}_leftImg8bit.png"
        lab_rel = Path("gtFine") / split / domain / f"{name}_gtFine_labelIds.png"
        ins_rel = Path("gtFine") / split / domain / f"{name}_gtFine_instanceIds.png"
        write_image(out / img_rel, image)
        write_label(out / lab_rel, label_ids)
        write_label(out / ins_rel, inst)
        rows.append(dict(split=split, domain=domain, image=str(img_rel), label=str(lab_rel), instance=str(ins_rel),
                         height=h, width=w, source="synthetic", encoding="labelIds"))
    return rows
