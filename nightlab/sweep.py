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

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from nightlab.io import atomic_path
from nightlab.labels import CLASS_NAMES
from nightlab.report import ABBREV
from nightlab.variants import CLAIMS, HEADLINE, IMAGE, LABELS, METHOD, SHORT, merged, metric
from nightlab.viz import new_figure, save_fig

NIGHTLAB = metric(merged(METHOD))  # the headline metric an experiment must have to enter a report


def _records(node, out: list, state: str | None = None) -> None:
    """Walk DVC's nested exp-show JSON and collect every revision's {name, rev, params, files}: ``files``
    maps each metrics file (reports/metrics.json, the headline, and each stage's own) to its data, so an
    experiment that stopped at an early stage still shows what that stage measured."""
    if isinstance(node, list):
        for n in node:
            _records(n, out, state)
    elif isinstance(node, dict):
        data = node.get("data")
        # A failed, queued or running experiment shows its baseline's metrics files: not its results.
        # DVC puts the executor's state on the experiment and the data on its revisions below it.
        state = (node.get("executor") or {}).get("state", state)
        unfinished = node.get("error") or state not in (None, "success")
        if isinstance(data, dict) and "params" in data and not unfinished:
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            files = {f: (v or {}).get("data") or {} for f, v in (data.get("metrics") or {}).items()}
            out.append({"name": node.get("name") or data.get("name") or node.get("rev") or data.get("rev"),
                        "rev": node.get("rev") or data.get("rev"), "params": params, "files": files})
        for key in ("experiments", "revs"):
            if key in node and node[key]:
                _records(node[key], out, state)


def _flat(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: params compared key by key."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _changed(params: dict, base: dict) -> dict:
    """The params keys whose values differ from the baseline's, with this revision's values."""
    a, b = _flat(params), _flat(base)
    return {k: a.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _baseline(recs: list[dict]) -> dict | None:
    """The run the experiments are compared with: the workspace (dvc exp show lists it first)."""
    for r in recs:
        if r["name"] == "workspace":
            return r
    return recs[0] if recs else None


def _variants(exp_show, allowed) -> list[dict]:
    """Records that differ from the baseline only in keys ``allowed(key)`` accepts (the baseline included):
    an experiment that also changed something else measures something else and is left out."""
    recs = []
    _records(exp_show, recs)
    base = _baseline(recs)
    if base is None:
        return []
    out = []
    for r in recs:
        changed = _changed(r["params"], base["params"])
        if all(allowed(k) for k in changed):
            out.append(dict(r, changed=changed))
    return out


def _report_split(params: dict) -> str:
    """The report split of a revision's params, and whether it is held out from the selection split."""
    splits = params.get("splits") or {}
    report = ", ".join(map(str, splits.get("report") or ["?"]))
    return report + (" (selection split)" if splits.get("report_on_select") else " (held out)")


SWEEP_KEYS = ("hard_classes.threshold", "splits.report", "splits.report_on_select")
# The baselines are reference rows that neither study reads (their tables are the two-level variants),
# and they are half the pipeline's training time: an experiment may drop them (profiles/studies.yaml)
# and still measure the same thing.
REFERENCE = "baselines."


def _same_method(swept) -> Callable[[str], bool]:
    """The filter of ``_variants``: the swept keys, and the baselines."""
    return lambda k: k in swept or k.startswith(REFERENCE)


def sweep_table(exp_show: list | dict, hard_of, headline: str) -> pd.DataFrame:
    """One row per threshold and report split (the selection split, where the threshold is chosen, and
    the held-out one), from each revision's ``headline`` metrics file. ``hard_of(rev)`` gives the hard
    class names a revision selected (``rev`` is a commit, or "workspace")."""
    rows = []
    for r in _variants(exp_show, _same_method(SWEEP_KEYS)):
        m, thr = r["files"].get(headline, {}), (r["params"].get("hard_classes") or {}).get("threshold")
        if thr is None or NIGHTLAB not in m:
            continue
        hard = hard_of(r["rev"]) or []
        hard = [c for c in CLASS_NAMES if c in hard]  # in class order
        rows.append({"experiment": r["name"], "threshold": float(thr), "hard classes": hard,
                     "mIoU image": m.get(metric(IMAGE)), "mIoU merged (HDM)": m.get(NIGHTLAB),
                     "report split": _report_split(r["params"]),
                     "selection": bool((r["params"].get("splits") or {}).get("report_on_select"))})
    df = pd.DataFrame(rows, columns=["experiment", "threshold", "hard classes", "mIoU image", "mIoU merged (HDM)",
                                     "report split", "selection"])
    # One row per threshold and split: the workspace and an experiment with the same params are the same run.
    return (df.drop_duplicates(subset=["threshold", "report split", "mIoU merged (HDM)"])
            .sort_values(["threshold", "selection"]).reset_index(drop=True))


def provenance_line(prov: dict | None) -> list[str]:
    """The header line naming the revision and dvc.lock an experiment report was made from."""
    if not prov:
        return []
    return [f"Made from git revision `{prov.get('git_rev')}` with dvc.lock md5 `{prov.get('dvc_lock_md5')}`; "
            "`nightlab report status` says whether that is still the committed run.", ""]


def write_sweep_report(table: pd.DataFrame, md_path: str | Path, png_path: str | Path,
                       provenance: dict | None = None) -> None:
    """Per threshold: its hard set, NightLab's mIoU on the selection split (where the threshold is
    chosen: the best one is marked) and on the held-out split (reported, never chosen from)."""
    sel, held = table[table.selection], table[~table.selection]
    split_of = lambda t: sorted(set(t["report split"]))[0] if len(t) else None  # noqa: E731
    lines = ["# Hard-class threshold sweep", "", *provenance_line(provenance),
             "Our data's version of the supplement's Table 1: the hard classes selected at each threshold and "
             "the mIoU (%) of NightLab (merged with HDM boxes). The threshold is chosen on the selection split "
             "(**bold**: the best there); the held-out column is reported, never chosen from.", ""]
    if sel.empty:
        lines += ["**These numbers are on a held-out split: choose a threshold on the selection split instead** "
                  "(run the sweep with `-S 'splits.report=[*/val/night]' -S splits.report_on_select=true`).", ""]
    best = sel.loc[sel["mIoU merged (HDM)"].idxmax(), "threshold"] if len(sel) else None
    cols = [c for c, t in ((f"mIoU on {split_of(sel)}", sel), (f"mIoU on {split_of(held)}", held),
                           (f"image-level mIoU on {split_of(held) or split_of(sel)}", held if len(held) else sel))
            if len(t)]
    lines += ["| Thres. | Selected hard classes | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    for thr in sorted(set(table.threshold)):
        rows = table[table.threshold == thr]
        names = "; ".join(ABBREV[c] for c in rows.iloc[0]["hard classes"]) or "(none)"
        s_row, h_row = rows[rows.selection], rows[~rows.selection]
        cells = []
        if len(sel):
            v = pct(s_row.iloc[0]["mIoU merged (HDM)"]) if len(s_row) else "-"
            cells.append(f"**{v}**" if thr == best else v)
        if len(held):
            cells.append(pct(h_row.iloc[0]["mIoU merged (HDM)"]) if len(h_row) else "-")
        img = h_row if len(held) else s_row
        cells.append(pct(img.iloc[0]["mIoU image"]) if len(img) else "-")
        lines.append(f"| {thr:g}{' (chosen)' if thr == best else ''} | {names} | " + " | ".join(cells) + " |")
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    fig, ax = new_figure(5, 3.2)
    for part, style in ((sel, "o-"), (held, "s-")):
        if len(part):
            ax.plot(part.threshold, part["mIoU merged (HDM)"] * 100, style, label=f"HDM, {split_of(part)}")
    img = held if len(held) else sel
    ax.plot(img.threshold, img["mIoU image"] * 100, "^--", label=f"image level, {split_of(img)}")
    ax.set_xlabel("hard_classes.threshold")
    ax.set_ylabel("mIoU (%)")
    ax.legend(fontsize=7)
    ax.set_title("Threshold sweep")
    save_fig(fig, png_path)


SEED_COLUMNS = {  # metric -> column, in table order
    **{metric(v): SHORT[v] for v in HEADLINE}, **{f"{c.name}.diff": c.short for c in CLAIMS},
}


def seeds_table(exp_show: list | dict, headline: str) -> pd.DataFrame:
    """One row per training seed (``seed``) with the headline metrics and each difference's bootstrap
    interval (columns ``<name>.ci``). Only revisions that differ from the workspace in ``seed`` alone
    count; revisions with the same seed and metrics are one run."""
    rows = []
    for r in _variants(exp_show, _same_method(("seed",))):
        m, seed = r["files"].get(headline, {}), r["params"].get("seed")
        if seed is None or NIGHTLAB not in m:
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


# Keys the config validates together with image_model's: a region is never seen below the image
# level's scale, and a region model that starts from the image model's weights (init: image) has its
# network. The image-level stages do not read them, so changing them with the image model's still
# measures an image-level variant.
IMAGE_COUPLED = {"region_model.min_scale", "region_model.backbone", "region_model.decoder_channels",
                 "region_model.light_adaptation"}


def ablation_table(exp_show: list | dict, image_metrics: str) -> pd.DataFrame:
    """Image-level variants (ablations and the full-resolution baselines): revisions that differ from the
    workspace only in ``image_model.*`` keys, with the image model's mIoU on the selection split and on
    the report split (the ``image_metrics`` file that per_class_iou writes), the workspace first."""
    rows = []
    for r in _variants(exp_show, lambda k: k.startswith("image_model.") or k in IMAGE_COUPLED):
        m = r["files"].get(image_metrics) or {}
        coupled_only = r["changed"] and not any(k.startswith("image_model.") for k in r["changed"])
        if "image.report.mIoU" not in m or coupled_only:  # a region-model change is no image-level variant
            continue
        change = ", ".join(f"{k.removeprefix('image_model.')}={v}" for k, v in r["changed"].items())
        rows.append({"experiment": r["name"], "change": change or "(default)", "selection mIoU": m.get("image.mIoU"),
                     "report mIoU": m.get("image.report.mIoU"), "report split": _report_split(r["params"])})
    df = pd.DataFrame(rows, columns=["experiment", "change", "selection mIoU", "report mIoU", "report split"])
    df = df.drop_duplicates(subset=["change", "report mIoU"])
    return df.sort_values("change", key=lambda c: c != "(default)", kind="stable").reset_index(drop=True)


def write_ablation_report(table: pd.DataFrame, md_path: str | Path, headline: dict | None = None,
                          provenance: dict | None = None) -> None:
    """The image-level variants beside the default image model and, when given, the default run's merged
    (two-level) mIoU on the same report split."""
    pct = lambda v: "-" if v is None or pd.isna(v) else f"{100 * v:.2f}"  # noqa: E731
    base = table[table.change == "(default)"]
    ref = base.iloc[0]["report mIoU"] if len(base) else None
    splits = sorted(set(table["report split"]))
    lines = ["# Image-level variants", "", *provenance_line(provenance),
             "Each row changes only `image_model.*` params against the default run (and the region-model keys the "
             "config ties to them, which no image-level stage reads); mIoU (%) of the image model "
             f"on the selection split (val/night) and on the report split ({' and '.join(splits)}). These are "
             "single training runs without an interval: read a difference against the seeds study's spread "
             "of the image level (reports/seeds/seeds.md).", "",
             "| variant | experiment | val mIoU | report mIoU | vs default |", "|---|---|---|---|---|"]
    for _, r in table.iterrows():
        delta = "-" if ref is None or r.change == "(default)" else f"{100 * (r['report mIoU'] - ref):+.2f}"
        lines.append(f"| {r.change} | {r.experiment} | {pct(r['selection mIoU'])} | {pct(r['report mIoU'])} | "
                     f"{delta} |")
    if headline:
        lines += ["", "The default run's two-level results on the same report split, for comparison: "
                  + ", ".join(f"{name} {pct(headline.get(key))}" for name, key in
                              ((LABELS[v].removeprefix("+ "), metric(v)) for v in HEADLINE if v != IMAGE))
                  + "."]
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
