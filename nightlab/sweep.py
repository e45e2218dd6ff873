"""Reports built from DVC experiments (`dvc exp show --json`): the threshold sweep and the seeds study.

* Threshold sweep (supplement Table 1 for our data): ``dvc exp run -S
  hard_classes.threshold=0.3,0.4,0.5,0.6 -S 'splits.report=[*/val/night]' -S
  splits.report_on_select=true --queue`` and ``dvc queue start``; then ``nightlab report
  threshold-sweep`` collects every experiment (and the workspace/HEAD) with merged metrics. A
  threshold is chosen on the selection split: the report says which split its numbers are on and
  warns when that is the held-out one.
* Seeds study: ``dvc exp run -S seed=1`` (and 2, ...); ``nightlab report seeds`` puts every
  seed's headline numbers side by side with the spread over seeds, the training noise that a
  bootstrap interval over test images does not cover (docs/design.md 1.8).
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


def _report_split(params: dict) -> str:
    """The report split of a revision's params, and whether it is held out from the selection split."""
    splits = params.get("splits") or {}
    report = ", ".join(map(str, splits.get("report") or ["?"]))
    return report + (" (selection split)" if splits.get("report_on_select") else " (held out)")


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
                     "mIoU image": m.get("image.mIoU"), "mIoU merged (HDM)": m.get("merged_hdm.mIoU"),
                     "report split": _report_split(r["params"])})
    df = pd.DataFrame(rows, columns=["experiment", "threshold", "hard classes", "mIoU image", "mIoU merged (HDM)",
                                     "report split"])
    # One row per threshold: the workspace and an experiment with the same params are the same run.
    return df.drop_duplicates(subset=["threshold", "mIoU merged (HDM)"]).sort_values("threshold").reset_index(drop=True)


def provenance_line(prov: dict | None) -> list[str]:
    """The header line naming the revision and dvc.lock an experiment report was made from."""
    if not prov:
        return []
    return [f"Made from git revision `{prov.get('git_rev')}` with dvc.lock md5 `{prov.get('dvc_lock_md5')}`; "
            "`nightlab report status` says whether that is still the committed run.", ""]


def write_sweep_report(table: pd.DataFrame, md_path: str | Path, png_path: str | Path,
                       provenance: dict | None = None) -> None:
    best = table["mIoU merged (HDM)"].idxmax() if len(table) else None
    splits = sorted(set(table["report split"])) if len(table) else []
    lines = ["# Hard-class threshold sweep", "", *provenance_line(provenance),
             "Our data's version of the supplement's Table 1: hard classes selected at each threshold and the "
             f"mIoU (%) of NightLab (merged with HDM boxes) on {' and '.join(splits) or 'the report split'}.", ""]
    if any(sp.endswith("(held out)") for sp in splits):
        lines += ["**These numbers are on a held-out split: choose a threshold on the selection split instead** "
                  "(run the sweep with `-S 'splits.report=[*/val/night]' -S splits.report_on_select=true`).", ""]
    lines += [
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


SEED_COLUMNS = {  # metric -> column, in table order
    "image.mIoU": "image", "merged_rdn.mIoU": "RDN", "merged_hdm.mIoU": "HDM", "merged_entropy.mIoU": "entropy",
    "merged_gt.mIoU": "GT boxes", "hdm_vs_image.diff": "HDM - image", "hdm_vs_rdn.diff": "HDM - RDN",
    "hdm_vs_entropy.diff": "HDM - entropy",
}


def seeds_table(exp_show: list | dict) -> pd.DataFrame:
    """One row per training seed (``seed``) with the headline metrics and each difference's bootstrap
    interval (columns ``<name>.ci``). Revisions with the same seed and metrics are one run."""
    recs = []
    _records(exp_show, recs)
    rows = []
    for r in recs:
        m, seed = r["metrics"], r["params"].get("seed")
        if seed is None or "merged_hdm.mIoU" not in m:
            continue
        row = {"experiment": r["name"], "seed": int(seed), "report split": _report_split(r["params"])}
        for key, col in SEED_COLUMNS.items():
            row[col] = m.get(key)
            if key.endswith(".diff"):
                base = key[: -len(".diff")]
                row[col + " CI"] = (m.get(base + ".ci_low"), m.get(base + ".ci_high"))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.drop_duplicates(subset=["seed", "HDM"]).sort_values("seed").reset_index(drop=True)


def write_seeds_report(table: pd.DataFrame, md_path: str | Path, provenance: dict | None = None) -> None:
    """Per-seed table, then mean, sample standard deviation and range over seeds; for each difference,
    on how many seeds its 95% interval excludes 0 (and on which side)."""
    pct = lambda v: "-" if v is None or pd.isna(v) else f"{100 * v:.2f}"  # noqa: E731
    cols = list(SEED_COLUMNS.values())
    splits = sorted(set(table["report split"]))
    lines = ["# Seeds study", "", *provenance_line(provenance),
             f"The same params and data, trained with each `seed`; mIoU (%) on {' and '.join(splits)}. A "
             "bootstrap interval covers the choice of test images; the spread over seeds is the training "
             "noise on top of it. A difference holds up only if it keeps its sign on every seed.", "",
             "| seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            ci = r.get(c + " CI")
            shown = isinstance(ci, tuple) and None not in ci
            cells.append(pct(r[c]) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if shown else ""))
        lines.append(f"| {r.seed} | " + " | ".join(cells) + " |")
    vals = table[cols].astype(float)
    lines += ["| mean | " + " | ".join(pct(vals[c].mean()) for c in cols) + " |",
              "| s.d. | " + " | ".join(pct(vals[c].std(ddof=1)) if len(vals) > 1 else "-" for c in cols) + " |",
              "| range | " + " | ".join(f"{pct(vals[c].min())} to {pct(vals[c].max())}" for c in cols) + " |", ""]
    for c in cols:
        if c + " CI" not in table:
            continue
        cis = [ci for ci in table[c + " CI"] if isinstance(ci, tuple) and None not in ci]
        above, below = sum(lo > 0 for lo, _ in cis), sum(hi < 0 for _, hi in cis)
        lines.append(f"- {c}: interval above 0 on {above} of {len(cis)} seeds, below 0 on {below}.")
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
