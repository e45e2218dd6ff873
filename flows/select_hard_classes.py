"""Stage select_hard_classes: class c is hard iff IoU_c < hard_classes.threshold (DESIGN 1.2).

Classes absent from the selection split (IoU undefined) are never hard: no evidence either way.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.common import run_stage
from nightlab.config import Params
from nightlab.hard import select_hard
from nightlab.io import read_table, write_json

TABLE = Path("reports/image/per_class_iou.parquet")
OUT = Path("reports/hard_classes.json")


@flow(name="select_hard_classes")
def select_hard_classes(p: Params) -> dict:
    log = get_run_logger()
    table = read_table(TABLE, ["class_id", "class_name", "iou"])
    hard = select_hard(table, p.hard_classes.threshold)
    out = {"threshold": p.hard_classes.threshold, "split": p.hard_classes.split, "domain": p.hard_classes.domain,
           "classes": hard, "names": [c["name"] for c in hard], "ids": [c["id"] for c in hard]}
    write_json(OUT, out)
    if hard:
        log.info(f"hard classes at threshold {p.hard_classes.threshold}: {', '.join(out['names'])}")
    else:
        log.warning(f"no class has IoU below {p.hard_classes.threshold}: the region step will change nothing")
    return out


if __name__ == "__main__":
    run_stage(select_hard_classes, "Select the hard classes from per-class IoU.")
