"""Stage evaluate_merged: the image level against the two-level variants on the report split
(docs/design.md 1.8).

Every variant is measured per image (one image-model pass per image; each selector's regions go
through the region model once and every budget reuses them): the image level; the merge with
the RDN's, HDM's and the uncertainty selector's top K regions (K = merge.max_regions, chosen on
val) and with every ground-truth hard box (the bound); and each selector at the budgets of
evaluation.ks (the equal-budget curves). Differences come with paired-bootstrap 95% intervals
over the report images (nightlab.stats). Writes the headline metrics for ``dvc metrics``, the
per-class and curve tables for ``dvc plots``, the per-image confusion matrices (every further
statistic can be computed from them), figures and reports/README.md. Each merge rule is also
measured on the selection split, where the rule to use is chosen (nightlab.merge.choose_rule):
merge_rules.csv marks it, and the run warns when merge.rule is another.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import get_run_logger
from tqdm import tqdm

from flows.common import StageOutputs, stage_flow, stage_main
from flows.declare import metric, plot
from flows.paths import (
    BASELINE_DATA,
    BASELINE_REPORTS,
    BOXES,
    COMPUTE,
    COMPUTE_TOTAL,
    CONFUSIONS,
    HARD_CLASSES,
    HARD_SET,
    HDM_MODEL,
    HDM_REPORTS,
    IMAGE_MODEL,
    MANIFEST,
    MERGED_REPORTS,
    METRICS,
    PREPARED,
    RDN_MODEL,
    RDN_REPORTS,
    REGION_MODEL,
    REGION_REPORTS,
    REPORTS,
    TRAINING_STAGES,
    baseline_confusions,
    baseline_reports,
    compute_file,
)
from nightlab import variants
from nightlab.boxes import boxes_for
from nightlab.compute import total_flops
from nightlab.data.manifest import read_manifest
from nightlab.device import pick_device
from nightlab.evaluation import TwoLevelSpec, crop_confusions, evaluate_two_level
from nightlab.headline import headline_metrics, rounded
from nightlab.io import DataError, atomic_path, read_json, read_table, write_json, write_table
from nightlab.labels import CLASS_NAMES
from nightlab.merge import RULES, TOLERANCE, choose_rule
from nightlab.metrics import iou_from_confusion, miou, subset_miou
from nightlab.predict import TwoLevel
from nightlab.report import ReportSplit, confusion_figure, k_curve_figure, paper_tables
from nightlab.stats import class_differences, paired_difference
from nightlab.trained import TrainedModels
from nightlab.variants import HEADLINE
from nightlab.viz import draw_boxes, overlay, plot_grouped_iou, save_grid

READS = (MANIFEST, PREPARED, BOXES, HARD_CLASSES, HARD_SET, IMAGE_MODEL, REGION_MODEL, RDN_MODEL, HDM_MODEL,
         RDN_REPORTS / "metrics.json", REGION_REPORTS / "metrics.json", HDM_REPORTS / "metrics.json", COMPUTE,
         BASELINE_DATA, BASELINE_REPORTS)
WRITES = (REPORTS / "README.md", MERGED_REPORTS / "panel.png", plot(MERGED_REPORTS / "per_class_iou.png"),
          plot(MERGED_REPORTS / "confusion_hdm.png"), MERGED_REPORTS / "confusion_hdm.csv",
          plot(MERGED_REPORTS / "k_curve.png"), CONFUSIONS, metric(METRICS), MERGED_REPORTS / "per_class_iou.csv",
          MERGED_REPORTS / "k_curve.csv", metric(COMPUTE_TOTAL), MERGED_REPORTS / "merge_rules.csv")
PARAMS = ("device", "merge", "evaluation", "boxes", "hdm.criterion", "splits.select", "splits.report",
          "image_model.window", "baselines")


@stage_flow("evaluate_merged")
def evaluate_merged(p) -> dict:
    log = get_run_logger()
    device = pick_device(p.device)
    hard_info, hard = read_json(HARD_CLASSES), read_json(HARD_SET)["ids"]
    where = ", ".join(map(str, p.splits.report))
    full = read_manifest(MANIFEST)
    rep = full.select(p.splits.report)
    if len(rep) == 0:
        raise DataError(f"{MANIFEST}: the report split (splits.report = {where}) has no images")
    held_out = not set(rep.df.row) & set(full.select(p.splits.select).df.row)
    models = TrainedModels.load(IMAGE_MODEL, device, p.image_model.window, REGION_MODEL,
                                {"rdn": RDN_MODEL, "hdm": HDM_MODEL})
    spec = TwoLevelSpec.of(p)
    ev = evaluate_two_level(rep, boxes_for(read_table(BOXES), rep, hard), models, hard, spec,
                            progress=_bar(len(rep), "evaluate"))
    baselines = tuple(p.baselines)
    for name in baselines:  # the same report images, in the same order (both select splits.report)
        ev.confusions[variants.baseline(name)] = np.load(baseline_confusions(name))["report"]
    cms = ev.confusions
    results = {v: iou_from_confusion(cms[v].sum(0)) for v in cms}

    metrics = headline_metrics(ev, hard, p.evaluation.bootstrap, p.evaluation.bootstrap_seed, baselines)
    metrics["report.images"] = len(rep)
    metrics.update(crop_metrics(rep, read_table(BOXES), models, hard, spec.batch_size, p.evaluation))
    compute = compute_report(baselines)
    metrics.update({f"compute.{k}": v for k, v in compute["summary"].items()})
    rules = _rule_table(ev, hard, p.evaluation).assign(split="report")
    if held_out:  # the rule is chosen on val: the selection split's images, evaluated the same way
        sel = full.select(p.splits.select)
        sel_ev = evaluate_two_level(sel, boxes_for(read_table(BOXES), sel, hard), models, hard, spec,
                                    progress=_bar(len(sel), "evaluate (select split, for the merge rule)"))
        rules = pd.concat([_rule_table(sel_ev, hard, p.evaluation).assign(split="select"), rules], ignore_index=True)
    chosen = choose_rule(rules[rules.split == ("select" if held_out else "report")].to_dict("records"))
    rules["chosen_on_select"] = rules.rule == chosen
    metrics["merge.rule_is_val_choice"] = int(chosen == spec.rule.kind)
    if chosen != spec.rule.kind:
        log.warning(f"merge.rule is {spec.rule.kind}, but on the selection split the rule to choose is {chosen} "
                    f"(the best mIoU with no class shown, by its 95% interval, to end more than "
                    f"{TOLERANCE * 100:.1f} IoU below the image level): "
                    f"see {MERGED_REPORTS / 'merge_rules.csv'}")

    table = pd.DataFrame({"class_name": CLASS_NAMES, "hard": [c in hard for c in range(len(CLASS_NAMES))],
                          **{v: results[v] for v in HEADLINE}})
    curve = _k_curve(ev, p.evaluation.ks, hard)
    stage_metrics = {"rdn": read_json(RDN_REPORTS / "metrics.json"), "hdm": read_json(HDM_REPORTS / "metrics.json"),
                     "region": read_json(REGION_REPORTS / "metrics.json")}
    cm = cms[variants.merged(variants.METHOD)].sum(0)
    with StageOutputs() as out:
        write_json(out(METRICS), metrics)
        write_json(out(COMPUTE_TOTAL), compute)
        write_table(rules, csv=out(MERGED_REPORTS / "merge_rules.csv"))
        with atomic_path(out(CONFUSIONS)) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=rep.df.image.to_numpy(str), **cms)
        write_table(table, csv=out(MERGED_REPORTS / "per_class_iou.csv"))
        write_table(curve, csv=out(MERGED_REPORTS / "k_curve.csv"))
        k_curve_figure(curve, p.merge.max_regions, out(MERGED_REPORTS / "k_curve.png"))
        plot_grouped_iou(table, HEADLINE, out(MERGED_REPORTS / "per_class_iou.png"),
                         f"Per-class IoU on {where} (hard classes in red)", highlight=hard_info["names"])
        write_table(pd.DataFrame(cm, columns=CLASS_NAMES).assign(gt=CLASS_NAMES),
                    csv=out(MERGED_REPORTS / "confusion_hdm.csv"))
        confusion_figure(cm, out(MERGED_REPORTS / "confusion_hdm.png"))
        save_grid(out(MERGED_REPORTS / "panel.png"), _panel(rep, ev, models, hard, spec, p.merge.panel_images))
        paper_tables(out(REPORTS / "README.md"), table, metrics, curve, hard_info, stage_metrics,
                     ReportSplit(where, held_out, p.merge.max_regions))
    log.info("mIoU: " + ", ".join(f"{v} {metrics[variants.metric(v)]}" for v in HEADLINE))
    return metrics


def crop_metrics(rep, boxes, models, hard, batch_size: int, ev_cfg) -> dict:
    """The region model against the image model inside the report split's ground-truth hard-class
    crops: mIoU on all pixels of the crops and on the hard classes, each difference with its paired
    95% interval over images, and the classes the region model zeroes where the image model is above
    20 IoU in the crops."""
    region, image = crop_confusions(models, rep, boxes_for(boxes, rep, hard), batch_size)
    out = {}
    for name, cms in (("region", region), ("image", image)):
        iou = iou_from_confusion(cms.sum(0))
        out[f"crops.{name}.mIoU"], out[f"crops.{name}.hard_mIoU"] = rounded(miou(iou)), rounded(subset_miou(iou, hard))
    for label, ids in (("", None), ("hard_", hard)):
        d = paired_difference(region, image, ev_cfg.bootstrap, ev_cfg.bootstrap_seed, ids)
        for k in ("diff", "ci_low", "ci_high"):
            out[f"crops.region_vs_image.{label}{k}"] = rounded(d[k])
    r, i = iou_from_confusion(region.sum(0)), iou_from_confusion(image.sum(0))
    out["crops.zeroed_classes"] = int(np.sum((np.nan_to_num(r) == 0) & (np.nan_to_num(i) > 0.2)))
    return out


def _bar(total: int, desc: str):
    """A progress callback for evaluate_two_level that closes its bar after the last image."""
    bar = tqdm(total=total, desc=desc, unit="image", dynamic_ncols=True, mininterval=1.0)

    def step(i: int) -> None:
        bar.update(1)
        if i == total - 1:
            bar.close()
    return step


def compute_report(baselines) -> dict:
    """reports/compute.json: each training stage's FLOPs, the system's total, and each baseline's."""
    stages = {s: read_json(compute_file(s)) for s in TRAINING_STAGES}
    total = total_flops(stages)
    base = {b: read_json(baseline_reports(b) / "compute.json") for b in baselines}
    short = {"train_image_model": "image", "train_rdn": "rdn", "train_region_model": "region",
             "hdm_relabel_retrain": "hdm"}
    summary = {"system_tflop": round(total / 1e12, 3),
               **{f"share_{short[s]}": round(r["train_flops"] / total, 4) if total else None
                  for s, r in stages.items()},
               **{f"{b}_tflop": round(m["train_flops"] / 1e12, 3) for b, m in base.items()}}
    return {"unit": "FLOP (torch.utils.flop_counter: matrix products and convolutions)", "stages": stages,
            "system_train_flops": total, "baselines": base,
            "summary": summary}


def _rule_table(ev, hard, evaluation) -> pd.DataFrame:
    """Each merge rule on NightLab's regions: mIoU, hard-class mIoU, the class it costs most against the
    image level with that change's interval, and the classes it is shown to cost more than the tolerance
    (the interval's upper end below it): the rule is chosen on val among those with none
    (nightlab.merge.choose_rule)."""
    image = ev.confusions[variants.IMAGE]
    rows = []
    for kind in RULES:
        rule = ev.confusions[variants.by_rule(kind)]
        change = class_differences(rule, image, evaluation.bootstrap, evaluation.bootstrap_seed)
        worst = int(np.argmin(np.where(np.isnan(change["diff"]), np.inf, change["diff"])))
        upper = np.where(np.isnan(change["ci_high"]), np.inf, change["ci_high"])
        iou = iou_from_confusion(rule.sum(0))
        rows.append({"rule": kind, "mIoU": rounded(miou(iou)), "hard_mIoU": rounded(subset_miou(iou, hard)),
                     "worst_class": CLASS_NAMES[worst], "worst_class_change": rounded(change["diff"][worst]),
                     "worst_class_ci_low": rounded(change["ci_low"][worst]),
                     "worst_class_ci_high": rounded(change["ci_high"][worst]),
                     "lowest_class_ci_high": rounded(upper.min()),
                     "shown_losing": "; ".join(CLASS_NAMES[c] for c in np.flatnonzero(upper < -TOLERANCE))})
    return pd.DataFrame(rows)


def _k_curve(ev, ks, hard) -> pd.DataFrame:
    """mIoU (all classes and hard classes) and coverage of the boxes where zooming helps, per
    selector and regions per image."""
    rows = []
    for name in variants.SELECTORS:
        for k in ks:
            iou = iou_from_confusion(ev.confusions[variants.at_budget(name, k)].sum(0))
            hits = np.asarray(ev.hits[variants.helpful(name, k)])
            rows.append({"selector": name, "k": k, "mIoU": rounded(miou(iou)),
                         "hard_mIoU": rounded(subset_miou(iou, hard)),
                         "helpful_covered": rounded(hits[:, 0].sum() / max(hits[:, 1].sum(), 1))})
    return pd.DataFrame(rows)


def _panel(rep, ev, models, hard, spec, n: int) -> list:
    """Image, labels, image level, merged (HDM) and the HDM boxes, for the first ``n`` images."""
    two = TwoLevel(models, hard, spec.selection, variants.METHOD, spec.batch_size, spec.rule)
    rows = []
    for i in range(min(n, len(rep))):
        img, lab = rep.image(i), rep.label(i)
        first = two.first_level(img)
        boxes = ev.boxes[variants.merged(variants.METHOD)][i]
        merged = two.second_level(img, first, boxes).byte().cpu().numpy()
        rows.append([img, lab, first.pred.byte().cpu().numpy(), merged, draw_boxes(overlay(img, merged), boxes)])
    return rows or [[np.zeros((8, 8, 3), np.uint8)]]


if __name__ == "__main__":
    stage_main(evaluate_merged, "Evaluate image-level and merged predictions; write reports.")
