"""The experiment reports (threshold sweep, seeds study) read DVC's `exp show --json` shape."""
import pytest

from nightlab.sweep import (
    ablation_table,
    seeds_table,
    sweep_table,
    write_ablation_report,
    write_seeds_report,
    write_sweep_report,
)

HARD: dict[str, list[str]] = {}  # what each revision's reports/hard_classes.json would say


def _rev(name, thr, merged, hard, held_out=False, **other):
    HARD[name] = [h.replace("_", " ") for h in hard]
    metrics = {"image.mIoU": 0.4, "merged_hdm.mIoU": merged}
    splits = {"report": ["*/test/night"]} if held_out else {"report": ["*/val/night"], "report_on_select": True}
    params = {"params.yaml": {"data": {"hard_classes": {"threshold": thr}, "splits": splits, **other}}}
    return {"rev": name, "name": name,
            "data": {"rev": name, "params": params, "metrics": {"reports/metrics.json": {"data": metrics}}}}


def test_sweep_table_collects_experiments_and_marks_best(tmp_path):
    ws = _rev("workspace", 0.5, 0.45, ["pole", "traffic_light"])
    ws["experiments"] = [
        {"revs": [_rev("exp-a", 0.3, 0.41, []), _rev("exp-b", 0.6, 0.43, ["pole", "traffic_light", "wall"])]},
        {"revs": [_rev("exp-c", 0.5, 0.45, ["pole", "traffic_light"])]},  # the same run as the workspace
        {"revs": [_rev("exp-d", 0.4, 0.99, ["pole"], rdn={"iters": 5})]},  # changes more than the threshold
    ]
    head = {"rev": "abc123", "name": "main", "data": {"rev": "abc123", "params": {}, "metrics": {}}}  # no metrics
    table = sweep_table([ws, head], HARD.get, "reports/metrics.json")
    assert list(table.threshold) == [0.3, 0.5, 0.6]
    assert table.loc[table.threshold == 0.6, "hard classes"].item() == ["wall", "pole", "traffic light"]
    write_sweep_report(table, tmp_path / "t.md", tmp_path / "t.png")
    md = (tmp_path / "t.md").read_text()
    assert "| 0.5 (chosen) | pole; light | **45.00** | 40.00 |" in md and "(none)" in md
    assert (tmp_path / "t.png").stat().st_size > 1000
    assert "mIoU on */val/night (selection split)" in md and "held-out split:" not in md


def test_sweep_puts_held_out_numbers_beside_the_selection_ones_and_chooses_on_selection(tmp_path):
    ws = _rev("workspace", 0.5, 0.30, ["pole"], held_out=True)
    ws["experiments"] = [{"revs": [_rev("val-0.5", 0.5, 0.45, ["pole"]), _rev("val-0.6", 0.6, 0.40, ["wall"]),
                                   _rev("test-0.6", 0.6, 0.50, ["wall"], held_out=True)]}]
    table = sweep_table([ws], HARD.get, "reports/metrics.json")
    write_sweep_report(table, tmp_path / "t.md", tmp_path / "t.png")
    md = (tmp_path / "t.md").read_text()
    # 0.6 is better on the held-out split, but the choice is made on the selection split
    assert "| 0.5 (chosen) | pole | **45.00** | 30.00 | 40.00 |" in md
    assert "| 0.6 | wall | 40.00 | 50.00 | 40.00 |" in md


def test_sweep_on_a_held_out_split_warns_against_choosing_from_it(tmp_path):
    rev = _rev("workspace", 0.5, 0.45, ["pole"])
    rev["data"]["params"]["params.yaml"]["data"]["splits"] = {"report": ["*/test/night"]}
    write_sweep_report(sweep_table([rev], HARD.get, "reports/metrics.json"), tmp_path / "t.md", tmp_path / "t.png")
    md = (tmp_path / "t.md").read_text()
    assert "*/test/night (held out)" in md and "choose a threshold on the selection split instead" in md
    assert "(chosen)" not in md


def _seed_rev(name, seed, hdm, d, lo, hi, report="*/test/night"):
    metrics = {"image.mIoU": 0.30, "merged_rdn.mIoU": 0.31, "merged_hdm.mIoU": hdm, "merged_entropy.mIoU": 0.305,
               "merged_gt.mIoU": 0.36, "hdm_vs_image.diff": d, "hdm_vs_image.ci_low": lo,
               "hdm_vs_image.ci_high": hi}
    params = {"params.yaml": {"data": {"seed": seed, "splits": {"report": [report]}}}}
    return {"rev": name, "name": name,
            "data": {"rev": name, "params": params, "metrics": {"reports/metrics.json": {"data": metrics}}}}


def test_seeds_report_gives_the_spread_and_counts_intervals_by_side(tmp_path):
    ws = _seed_rev("workspace", 0, 0.32, 0.02, 0.01, 0.03)
    ws["experiments"] = [{"revs": [_seed_rev("exp-1", 1, 0.30, 0.00, -0.01, 0.01)]},
                         {"revs": [_seed_rev("exp-2", 2, 0.34, 0.04, 0.02, 0.06)]},
                         {"revs": [_seed_rev("exp-0", 0, 0.32, 0.02, 0.01, 0.03)]},  # the workspace again
                         {"revs": [_seed_rev("exp-val", 0, 0.50, 0.1, 0.05, 0.15, report="*/val/night")]}]
    table = seeds_table([ws], "reports/metrics.json")
    assert list(table.seed) == [0, 1, 2]  # the run on another split is another study, left out
    assert table["HDM - image"].mean() == pytest.approx(0.02)
    write_seeds_report(table, tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    assert "| mean | 30.00 | 31.00 | 32.00 |" in md
    assert "| s.d. | 0.00 | 0.00 | 2.00 |" in md  # image and RDN identical over seeds, HDM 30/32/34
    assert "HDM - image: interval above 0 on 2 of 3 seeds, below 0 on 0." in md
    assert "| 0 | 30.00 | 31.00 | 32.00 | 30.50 | 36.00 | 2.00 [1.00, 3.00] |" in md


def _image_rev(name, sel, rep, **image_model):
    files = {"reports/image/metrics.json": {"data": {"image.mIoU": sel, "image.report.mIoU": rep}},
             "reports/metrics.json": {"data": {"image.mIoU": 0.99}}}  # stale: the stage that writes it never ran
    params = {"params.yaml": {"data": {"seed": 0, "image_model": {"image_scale": 0.5, "light_adaptation": True,
                                                                  **image_model}}}}
    return {"rev": name, "name": name, "data": {"rev": name, "params": params, "metrics": files}}


def test_ablation_table_reads_the_image_stage_metrics_and_leaves_out_other_changes(tmp_path):
    ws = _image_rev("workspace", 0.35, 0.36)
    no_light = _image_rev("no-light", 0.33, 0.335, light_adaptation=False)
    no_light["data"]["params"]["params.yaml"]["data"]["region_model"] = {"light_adaptation": False}  # init: image
    ws["experiments"] = [{"revs": [no_light, _image_rev("fullres", 0.38, 0.39, image_scale=1.0)]}]
    failed = _image_rev("failed", 0.35, 0.36, image_scale=1.0)  # its metrics files are the baseline's
    failed["error"] = {"msg": "Experiment run failed", "type": ""}
    coupled = _image_rev("fullres-2", 0.37, 0.38, image_scale=1.0, decoder_channels=32)
    coupled["data"]["params"]["params.yaml"]["data"]["region_model"] = {"min_scale": 1.0}
    running = _image_rev("running", 0.35, 0.36, image_scale=1.0, decoder_channels=16)
    ws["experiments"] += [{"revs": [failed, coupled]}, {"executor": {"state": "running"}, "revs": [running]}]
    other = _image_rev("seed-1", 0.30, 0.30)
    other["data"]["params"]["params.yaml"]["data"]["seed"] = 1
    ws["experiments"].append({"revs": [other]})
    region_only = _image_rev("region-only", 0.35, 0.36)
    region_only["data"]["params"]["params.yaml"]["data"]["region_model"] = {"decoder_channels": 8}
    ws["experiments"].append({"revs": [region_only]})
    table = ablation_table([ws], "reports/image/metrics.json")
    assert list(table.experiment) == ["workspace", "no-light", "fullres", "fullres-2"]
    write_ablation_report(table, tmp_path / "a.md", {"merged_hdm.mIoU": 0.375})
    md = (tmp_path / "a.md").read_text()
    assert "| light_adaptation=False, region_model.light_adaptation=False | no-light | 33.00 | 33.50 | -2.50 |" in md
    assert "| image_scale=1.0 | fullres | 38.00 | 39.00 | +3.00 |" in md
    assert "region level, HDM boxes (NightLab) 37.50" in md and "99.00" not in md


def test_an_experiment_that_drops_the_baselines_still_enters_the_studies():
    """The baselines are reference rows neither study reads: dropping them (half the training time)
    leaves the experiment measuring the same thing; changing anything else does not."""
    base = {"longer": {"image_scale": 0.25}, "fullres": {"image_scale": 1.0}}
    ws = _seed_rev("workspace", 0, 0.32, 0.02, 0.01, 0.03)
    ws["data"]["params"]["params.yaml"]["data"]["baselines"] = base
    dropped = _seed_rev("exp-1", 1, 0.30, 0.00, -0.01, 0.01)  # no baselines key at all
    halved = _seed_rev("exp-2", 2, 0.34, 0.04, 0.02, 0.06)
    halved["data"]["params"]["params.yaml"]["data"]["baselines"] = {"longer": base["longer"]}
    other = _seed_rev("exp-3", 3, 0.50, 0.1, 0.05, 0.15)
    other["data"]["params"]["params.yaml"]["data"].update(baselines=base, merge={"max_regions": 5})
    ws["experiments"] = [{"revs": [dropped, halved, other]}]
    assert list(seeds_table([ws], "reports/metrics.json").seed) == [0, 1, 2]

    sweep = _rev("workspace", 0.5, 0.45, ["pole"], baselines=base)
    sweep["experiments"] = [{"revs": [_rev("val-0.6", 0.6, 0.40, ["wall"]),
                                      _rev("val-0.4", 0.4, 0.40, ["wall"], baselines=base, seed=7)]}]
    assert list(sweep_table([sweep], HARD.get, "reports/metrics.json").threshold) == [0.5, 0.6]
