"""Prefect overhead per stage: ``python -m flows.select_hard_classes`` (a cheap stage) against the
same work without Prefect: a fresh python process that imports the same modules (the flow module,
hence Prefect, included) and calls nightlab.hard.select_hard on the table directly. Timed with the
runner's Prefect server (PREFECT_API_URL set) and with Prefect's temporary server (unset, own
PREFECT_HOME), side by side in each round after one untimed warm-up of each.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from benches.common import copy_project, figure, median_times, prefect_server, sh, stage_env, temp_dir
from nightlab.io import write_table
from nightlab.labels import CLASS_NAMES

TARGET = 2.0
BARE = """
import flows.select_hard_classes as s
from nightlab.config import load_params
from nightlab.hard import select_hard
from nightlab.io import read_table, write_json
p = load_params("params.yaml")
hard = select_hard(read_table(s.IMAGE_IOU, ["class_id", "class_name", "iou"]), p.hard_classes.threshold)
write_json(s.HARD_CLASSES, {"threshold": p.hard_classes.threshold, "classes": hard, "ids": [c["id"] for c in hard]})
"""


def run(quick: bool) -> dict:
    tmp = temp_dir("prefect")
    proj = copy_project(tmp / "proj")
    rng = np.random.default_rng(0)
    write_table(pd.DataFrame({"class_id": range(len(CLASS_NAMES)), "class_name": CLASS_NAMES,
                              "iou": rng.random(len(CLASS_NAMES))}),
                parquet=proj / "reports/image/per_class_iou.parquet")
    with_server, temporary = prefect_server().env(), stage_env(None, tmp / "prefect-home")
    stage = [sys.executable, "-m", "flows.select_hard_classes"]
    fns = {"bare": lambda: sh([sys.executable, "-c", BARE], proj, temporary),
           "server": lambda: sh(stage, proj, with_server),
           "temporary": lambda: sh(stage, proj, temporary)}
    repeat = 3 if quick else 5
    median_times(fns, 1)  # warm-up: the temporary server's database, bytecode caches
    t = median_times(fns, repeat)
    over_server, over_temp = t["server"] - t["bare"], t["temporary"] - t["bare"]
    return {
        "title": "Prefect overhead per stage (select_hard_classes)",
        "setup": "stage process vs a bare process importing the same modules, same table and params",
        "repeat": repeat,
        "figures": [
            figure("overhead with a running server", over_server, "s", f"<= {TARGET:g} s", over_server <= TARGET),
            figure("overhead with the temporary server", over_temp, "s"),
            figure("stage with server", t["server"], "s"),
            figure("stage with temporary server", t["temporary"], "s"),
            figure("bare (same imports, no flow run)", t["bare"], "s"),
        ],
        "raw": t,
    }
