"""Version 3 of the night city: version 2's scenes, drawn the same at every resolution.

Version 2 drew some random numbers in counts that grew with the image's pixels (lit windows at the
street's end; the day's per-pixel noise before the night's light), so a seed gave another scene at
another frame size. Version 3 draws every number that decides what a scene contains, and how it is
lit and exposed, independently of the resolution: a scene at 512x1024 is the 256x512 scene with
twice the detail (docs/design.md 4). Only the per-pixel sensor noise and blur stay per pixel.
"""
from __future__ import annotations

import numpy as np

from nightlab.data.synthetic import v2
from nightlab.data.synthetic.common import Scene


def layout_scene(h: int, w: int, rng: np.random.Generator) -> Scene:
    return v2.layout_scene(h, w, rng, stable=True)


def render(scene: Scene, night: bool, rng: np.random.Generator) -> np.ndarray:
    return v2.render(scene, night, rng, stable=True)
