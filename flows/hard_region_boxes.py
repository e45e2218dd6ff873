"""Stage hard_region_boxes: context boxes of every class from the ground truth, for all splits
(docs/design.md 1.3).

Work is split into shards of images, each a Prefect task with a persisted result keyed by the
digest of the stage's inputs and the box params, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task

from flows.common import (
    StageOutputs,
    catch_user_errors,
    digest,
    key_from_arg,
    stage_flow,
    stage_inputs,
    stage_main,
    task_results,
)
from flows.declare import plot
from flows.paths import BOX_REPORTS, BOXES, MANIFEST, PREPARED
from nightlab.boxes import boxes_from_labels
from nightlab.config import BoxesConfig
from nightlab.data.manifest import read_manifest
from nightlab.io import write_table
from nightlab.viz import plot_box_sizes

READS = (MANIFEST, PREPARED)
WRITES = (BOXES, BOX_REPORTS / "boxes_per_class.csv", plot(BOX_REPORTS / "box_sizes.png"))
PARAMS = ("boxes",)
SHARD = 32


@task(persist_result=True, cache_key_fn=key_from_arg, task_run_name="boxes-{first}")
@catch_user_errors
def box_shard(key: str, manifest_path: str, first: int, last: int, cfg: BoxesConfig) -> pd.DataFrame:
    m = read_manifest(manifest_path)
    frames = []
    for i in range(first, last):
        df = boxes_from_labels(m.label(i), m.instance(i), cfg.min_area, cfg.context, cfg.min_size, cfg.connectivity)
        df.insert(0, "sample", i)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@stage_flow("hard_region_boxes")
def hard_region_boxes(p) -> dict:
    log = get_run_logger()
    m = read_manifest(MANIFEST)
    base = digest(stage_inputs("hard_region_boxes"), p.boxes)  # label contents and code, not just the manifest
    futures = [box_shard.submit(digest(base, i), str(MANIFEST), i, min(i + SHARD, len(m)), p.boxes)
               for i in range(0, len(m), SHARD)]
    boxes = pd.concat(task_results(futures), ignore_index=True)
    meta = m.df[["split", "domain", "height", "width"]]
    boxes = boxes.join(meta, on="sample")
    tight = boxes.assign(width=boxes.bx1 - boxes.bx0, height=boxes.by1 - boxes.by0)
    per_class = tight.groupby("class_name").agg(boxes=("area", "size"), median_area=("area", "median"),
                                                median_width=("width", "median"),
                                                median_height=("height", "median")).reset_index()
    with StageOutputs() as out:
        write_table(boxes, parquet=out(BOXES))
        reports = out(BOX_REPORTS, directory=True)
        write_table(per_class, csv=reports / "boxes_per_class.csv")
        plot_box_sizes(boxes, reports / "box_sizes.png")
    log.info(f"{len(boxes)} boxes from {len(m)} images written to {BOXES}")
    return {"boxes": len(boxes)}


if __name__ == "__main__":
    stage_main(hard_region_boxes, "Generate context boxes of every class from the ground truth.")
