"""The procedural night city (docs/design.md 4): a street scene laid out once, rendered by day and
by night, written in the Cityscapes layout.

Versions: 3 (the default) is version 2 drawn the same at every resolution; 2 is sized from real
driving data and renders the same bits on every x86 machine; 1 is the original generator; the older
ones are kept so that earlier results can be reproduced (``data.synthetic.version``). Everything
is deterministic in ``(seed, split, index)``, so shards
can be generated in any order.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nightlab.data.synthetic import v1, v2, v3
from nightlab.data.synthetic.common import EGO, Scene, scene_name, scene_rng, write_scene

if TYPE_CHECKING:
    from nightlab.config import SyntheticConfig

VERSIONS = {1: v1, 2: v2, 3: v3}
LATEST = 3
layout_scene, render = v3.layout_scene, v3.render

__all__ = ["EGO", "LATEST", "VERSIONS", "Scene", "generate_scene", "generate_shard", "layout_scene", "render",
           "scene_name", "scene_rng", "synthetic_shards"]


def generate_scene(out: Path, split: str, index: int, seed: int, h: int, w: int, version: int = LATEST) -> list[dict]:
    """Lay out one scene, render it by day and by night, write both in the Cityscapes layout.

    Returns the manifest rows (paths relative to ``out``).
    """
    gen = VERSIONS[version]
    rng = scene_rng(seed, split, index)
    scene = gen.layout_scene(h, w, rng)
    images = {domain: gen.render(scene, domain == "night", rng) for domain in ("day", "night")}
    return write_scene(Path(out), split, index, scene, images)


def synthetic_shards(cfg: SyntheticConfig, shard_size: int = 16) -> list[tuple[str, list[int]]]:
    """(split, scene indices) of every shard of the splits the generator makes (cfg.splits())."""
    shards = []
    for split in cfg.splits():
        n = getattr(cfg, split)
        shards += [(split, list(range(i, min(i + shard_size, n)))) for i in range(0, n, shard_size)]
    return shards


def generate_shard(out: Path, split: str, indices, seed: int, cfg: SyntheticConfig) -> list[dict]:
    return [row for i in indices for row in generate_scene(Path(out), split, i, seed, cfg.height, cfg.width,
                                                           cfg.version)]
