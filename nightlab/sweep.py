"""The threshold sweep report (supplement Table 1 for our data), built from `dvc exp show --json`.

Run the sweep with ``dvc exp run -S hard_classes.threshold=0.3,0.4,0.5,0.6 --queue`` and
``dvc queue start``; then ``nightlab report threshold-sweep`` collects every experiment (and the
workspace/HEAD) that has merged metrics into a markdown table and a plot.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nightlab.io import atomic_path
from nightlab.labels import CLASS_NAMES
from nightlab.report import ABBREV
from nightlab.viz import new_figure, save_fig

METRICS = "reports/metrics.json"


def _records(node, out: list) -> None:
    """Walk DVC's nested exp-show JSON and collect every revision's {name, params, metrics}."""
    if isinstance(node, list):
        for n in node:
            _records(n, out)
    elif isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            metrics = ((data.get("metrics") or {}).get(METRICS) or {}).get("data") or {}
            out.append({"name": node.get("name") or data.get("name") or node.get("rev") or data.get("rev"),
                        "rev": node.get("rev") or data.get("rev"), "params": params, "metrics": metrics})
        for key in ("experiments", "revs"):
            if key in node and node[key]:
                _records(node[key], out)


def sweep_table(exp_show: list | dict, hard_of) -> pd.DataFrame:
    """One row per threshold. ``hard_of(rev)`` gives the hard class names a revision selected (its
    reports/hard_classes.json; ``rev`` is a commit, or "workspace")."""
    recs = []
    _records(exp_show, recs)
    rows = []
    for r in recs:
        m, thr = r["metrics"], (r["params"].get("hard_classes") or {}).get("threshold")
        if thr is None or "merged_hdm.mIoU" not in m:
            continue
        hard = hard_of(r["rev"]) or []
        hard = [c for c in CLASS_NAMES if c in hard]  # in class order
        rows.append({"experiment": r["name"], "threshold": float(thr), "hard classes": hard,
                     "mIoU image": m.get("image.mIoU"), "mIoU merged (HDM)": m.get("merged_hdm.mIoU")})
    df = pd.DataFrame(rows, columns=["experiment", "threshold", "hard classes", "mIoU image", "mIoU merged (HDM)"])
    # One row per threshold: the workspace and an experiment with the same params are the same run.
    return df.drop_duplicates(subset=["threshold", "mIoU merged (HDM)"]).sort_values("threshold").reset_index(drop=True)


def write_sweep_report(table: pd.DataFrame, md_path: str | Path, png_path: str | Path) -> None:
    best = table["mIoU merged (HDM)"].idxmax() if len(table) else None
    lines = ["# Hard-class threshold sweep", "",
             "Our data's version of the supplement's Table 1: hard classes selected at each threshold and the "
             "mIoU (%) of NightLab (merged with HDM boxes) on the selection split.", "",
             "| Thres. | Selected hard classes | mIoU | image-level mIoU |", "|---|---|---|---|"]
    for i, r in table.iterrows():
        names = "; ".join(ABBREV[c] for c in r["hard classes"]) or "(none)"
        miou = f"{100 * r['mIoU merged (HDM)']:.2f}"
        lines.append(f"| {r.threshold:g} | {names} | {'**' + miou + '**' if i == best else miou} | "
                     f"{100 * r['mIoU image']:.2f} |")
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    fig, ax = new_figure(5, 3.2)
    ax.plot(table.threshold, table["mIoU merged (HDM)"] * 100, "o-", label="merged (HDM)")
    ax.plot(table.threshold, table["mIoU image"] * 100, "s--", label="image level")
    ax.set_xlabel("hard_classes.threshold")
    ax.set_ylabel("mIoU (%)")
    ax.legend()
    ax.set_title("Threshold sweep")
    save_fig(fig, png_path)
