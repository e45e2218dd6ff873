"""A fresh test split for the final check of a headline (docs/design.md 1.8).

The test split's numbers show on every run, so by the time a result is written down the test
split has been looked at many times. With synthetic data a new one is free: the same generator
and params with a data seed never used before give scenes no choice could have been tuned on.
`nightlab confirm --data-seed N` generates them, evaluates the trained models on them exactly as
the evaluate_merged stage does, and writes reports/confirm/.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nightlab.boxes import boxes_for, boxes_from_labels
from nightlab.data.manifest import Manifest, validate_frame
from nightlab.data.synthetic import generate_shard


def fresh_test_split(out: str | Path, cfg, seed: int, scenes: int) -> Manifest:
    """``scenes`` test scenes (day and night) generated with data seed ``seed`` under ``out``."""
    rows = generate_shard(Path(out), "test", range(scenes), seed, cfg)
    df = pd.DataFrame(rows).assign(md5="")  # never stored, so nothing to vouch for
    return Manifest(validate_frame(df, str(out)), Path(out))


def hard_boxes(manifest: Manifest, box_cfg, hard_ids) -> pd.DataFrame:
    """The hard-class context boxes of every image of ``manifest`` (a ``select`` result), as the
    hard_region_boxes stage makes them, ``sample`` = position in ``manifest``."""
    frames = []
    for i in range(len(manifest)):
        df = boxes_from_labels(manifest.label(i), manifest.instance(i), box_cfg.min_area, box_cfg.context,
                               box_cfg.min_size, box_cfg.connectivity)
        frames.append(df.assign(sample=int(manifest.df.row.iat[i])))
    return boxes_for(pd.concat(frames, ignore_index=True), manifest, hard_ids)
