"""Stage hard_region_boxes: context boxes of every class from the ground truth, for all splits.

Work is split into shards of images, each a Prefect task with a persisted result keyed by the
digest of the manifest and the box params, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task

from flows.common import digest, key_from_arg, run_stage, stage_inputs
from nightlab.boxes import boxes_from_labels
from nightlab.config import BoxesConfig, Params
from nightlab.data.manifest import read_manifest
from nightlab.io import write_table
from nightlab.labels import CLASS_NAMES
from nightlab.viz import save_fig

MANIFEST = Path("data/manifest.parquet")
OUT = Path("data/boxes.parquet")
REPORTS = Path("reports/boxes")
SHARD = 32


@task(persist_result=True, cache_key_fn=key_from_arg, task_run_name="boxes-{first}")
def box_shard(key: str, manifest_path: str, first: int, last: int, cfg: BoxesConfig) -> pd.DataFrame:
    m = read_manifest(manifest_path)
    frames = []
    for i in range(first, last):
        df = boxes_from_labels(m.label(i), m.instance(i), cfg.min_area, cfg.context, cfg.min_size, cfg.connectivity)
        df.insert(0, "sample", i)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def plot_box_sizes(boxes: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 4))
    data = [np.sqrt(boxes.area[boxes.class_id == c]) for c in range(len(CLASS_NAMES))]
    ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
    ax.set_xticks(range(1, len(CLASS_NAMES) + 1), CLASS_NAMES, rotation=60, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("sqrt(object area) [native px]")
    ax.set_title("Ground-truth object sizes per class")
    save_fig(fig, path)


@flow(name="hard_region_boxes")
def hard_region_boxes(p: Params) -> dict:
    log = get_run_logger()
    m = read_manifest(MANIFEST)
    base = digest(stage_inputs("hard_region_boxes"), p.boxes)  # label contents and code, not just the manifest
    futures = [box_shard.submit(digest(base, i), str(MANIFEST), i, min(i + SHARD, len(m)), p.boxes)
               for i in range(0, len(m), SHARD)]
    boxes = pd.concat([f.result() for f in futures], ignore_index=True)
    meta = m.df[["split", "domain", "height", "width"]]
    boxes = boxes.join(meta, on="sample")
    write_table(boxes, parquet=OUT)
    per_class = boxes.groupby("class_name").agg(boxes=("area", "size"), median_area=("area", "median")).reset_index()
    REPORTS.mkdir(parents=True, exist_ok=True)
    write_table(per_class, csv=REPORTS / "boxes_per_class.csv")
    plot_box_sizes(boxes, REPORTS / "box_sizes.png")
    log.info(f"{len(boxes)} boxes from {len(m)} images written to {OUT}")
    return {"boxes": len(boxes)}


if __name__ == "__main__":
    run_stage(hard_region_boxes, "Generate context boxes of every class from the ground truth.")
