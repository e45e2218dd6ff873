"""DVC: a no-op ``dvc repro`` and a hard_classes.threshold change, in a tiny-profile project copy.

The copy is a fresh git repo after one full ``dvc repro`` (its time is the reference); stages run
against the runner's Prefect server. The no-op must run no stage; each threshold change reruns
select_hard_classes and what depends on it, never data preparation or the image model.
"""
from __future__ import annotations

import statistics

import yaml

from benches.common import figure, prefect_server, sh, timed, tiny_project

NOOP_TARGET = 5.0


def ran_stages(stdout: str) -> list[str]:
    return [ln.split("'")[1] for ln in stdout.splitlines() if ln.startswith("Running stage '")]


def run(quick: bool) -> dict:
    proj, full_s = tiny_project()
    env = prefect_server().env()
    repeat, thresholds = 3, [0.45] if quick else [0.45, 0.55, 0.6]

    def repro() -> list[str]:
        return ran_stages(sh(["dvc", "repro"], proj, env).stdout)

    noop, noop_ran = [], []
    for _ in range(repeat):
        noop.append(timed(lambda: noop_ran.extend(repro())))
    change, change_ran = [], []
    params_path = proj / "params.yaml"
    for t in thresholds:
        params = yaml.safe_load(params_path.read_text())
        params["hard_classes"]["threshold"] = t
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        change.append(timed(lambda: change_ran.append(repro())))
    noop_s, change_s = statistics.median(noop), statistics.median(change)
    upstream = {"prepare_data", "hard_region_boxes", "train_image_model", "per_class_iou"}
    rerun_ok = all("select_hard_classes" in r and not upstream & set(r) for r in change_ran)
    return {
        "title": "DVC (tiny profile)",
        "setup": f"tiny-profile copy; full dvc repro {full_s:.1f} s; threshold changed to "
                 f"{', '.join(map(str, thresholds))} in turn (each a new value: no run-cache hit); reran "
                 f"{', '.join(change_ran[0])}",
        "repeat": f"{repeat} (no-op), {len(thresholds)} (threshold change)",
        "figures": [
            figure("no-op dvc repro", noop_s, "s", f"<= {NOOP_TARGET:g} s", noop_s <= NOOP_TARGET and not noop_ran),
            figure("no-op ran no stage", not noop_ran),
            figure("full dvc repro", full_s, "s"),
            figure("threshold-change rerun", change_s, "s"),
            figure("threshold-change rerun / full run", change_s / full_s, ""),
            figure("rerun skipped prepare_data..per_class_iou", rerun_ok),
        ],
        "raw": {"noop_s": noop, "change_s": change, "change_ran": change_ran, "full_s": full_s},
    }
