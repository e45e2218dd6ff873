"""Stage select_hard_classes: class c is hard iff IoU_c < hard_classes.threshold (docs/design.md 1.2).

Classes absent from the selection split (IoU undefined) are never hard: no evidence either way.
Two outputs: reports/hard_classes.json records the choice with its evidence (threshold, split,
IoUs); data/hard_set.json holds only the set. The stages that train on the hard set depend on
the set alone, so a threshold that selects the same classes reruns only this stage and the report.
"""
from __future__ import annotations

from prefect import get_run_logger

from flows.common import StageOutputs, stage_flow, stage_main
from flows.paths import HARD_CLASSES, HARD_SET, IMAGE_IOU
from nightlab.hard import select_hard
from nightlab.io import read_table, write_json

READS = (IMAGE_IOU,)
WRITES = (HARD_CLASSES, HARD_SET)
PARAMS = ("hard_classes.threshold", "splits.select")


@stage_flow("select_hard_classes")
def select_hard_classes(p) -> dict:
    log = get_run_logger()
    table = read_table(IMAGE_IOU, ["class_id", "class_name", "iou"])
    threshold = p.hard_classes.threshold
    hard = select_hard(table, threshold)
    ids, names = [c["id"] for c in hard], [c["name"] for c in hard]
    out = {"threshold": threshold, "selected_on": [str(r) for r in p.splits.select],
           "classes": hard, "names": names, "ids": ids}
    with StageOutputs() as staged:
        write_json(staged(HARD_CLASSES), out)
        write_json(staged(HARD_SET), {"ids": sorted(ids), "names": [n for _, n in sorted(zip(ids, names))]})
    if hard:
        log.info(f"hard classes at threshold {threshold}: {', '.join(names)}")
    else:
        log.warning(f"no class has IoU below {threshold}: the region step will change nothing")
    return out


if __name__ == "__main__":
    stage_main(select_hard_classes, "Select the hard classes from per-class IoU.")
