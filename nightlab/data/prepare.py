"""Building a dataset: synthetic generation in shards, and opening/checking every sample."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from nightlab.config import SyntheticConfig
from nightlab.data.manifest import check_sample, decode_label
from nightlab.data.synthetic import generate_scene
from nightlab.labels import CLASS_NAMES, NUM_CLASSES


def synthetic_shards(cfg: SyntheticConfig, splits, shard_size: int = 16) -> list[tuple[str, list[int]]]:
    shards = []
    for split in splits:
        n = getattr(cfg, split, None)
        if n is None:
            raise ValueError(f"data.synthetic has no size for split {split!r}; set data.synthetic.{split}")
        shards += [(split, list(range(i, min(i + shard_size, n)))) for i in range(0, n, shard_size)]
    return shards


def generate_shard(out: Path, split: str, indices, seed: int, cfg: SyntheticConfig) -> list[dict]:
    rows = []
    for i in indices:
        rows += generate_scene(Path(out), split, i, seed, cfg.height, cfg.width)
    return rows


def inspect_samples(root: Path, df: pd.DataFrame, workers: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """Open every image and label, check them (raises DataError naming the file), and count
    label pixels per class. Returns the frame with height/width filled and counts (N, 19)."""

    def one(row):
        h, w = check_sample(root, row)
        lab = decode_label(root / row["label"], row["encoding"])
        return h, w, np.bincount(lab[lab < NUM_CLASSES].ravel(), minlength=NUM_CLASSES)

    records = df.to_dict("records")
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, records))  # re-raises the first error in order
    df = df.copy()
    df["height"] = [r[0] for r in results]
    df["width"] = [r[1] for r in results]
    return df, np.stack([r[2] for r in results]) if results else np.zeros((0, NUM_CLASSES), np.int64)


def class_frequency(df: pd.DataFrame, counts: np.ndarray) -> pd.DataFrame:
    """Pixel count and frequency of every class per (split, domain): the dataset summary table."""
    out = []
    for (split, domain), idx in df.groupby(["split", "domain"]).groups.items():
        c = counts[np.asarray(idx)].sum(0)
        total = max(int(c.sum()), 1)
        present = (counts[np.asarray(idx)] > 0).sum(0)
        for k, name in enumerate(CLASS_NAMES):
            out.append(dict(split=split, domain=domain, class_id=k, class_name=name, pixels=int(c[k]),
                            frequency=c[k] / total, images_with_class=int(present[k]), images=len(idx)))
    return pd.DataFrame(out)
