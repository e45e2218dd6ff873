"""The experiment reports (threshold sweep, seeds study) read DVC's `exp show --json` shape."""
import pytest

from nightlab.sweep import seeds_table, sweep_table, write_seeds_report, write_sweep_report

HARD: dict[str, list[str]] = {}  # what each revision's reports/hard_classes.json would say


def _rev(name, thr, merged, hard):
    HARD[name] = [h.replace("_", " ") for h in hard]
    metrics = {"image.mIoU": 0.4, "merged_hdm.mIoU": merged}
    params = {"params.yaml": {"data": {"hard_classes": {"threshold": thr},
                                       "splits": {"report": ["*/val/night"], "report_on_select": True}}}}
    return {"rev": name, "name": name,
            "data": {"rev": name, "params": params, "metrics": {"reports/metrics.json": {"data": metrics}}}}


def test_sweep_table_collects_experiments_and_marks_best(tmp_path):
    ws = _rev("workspace", 0.5, 0.45, ["pole", "traffic_light"])
    ws["experiments"] = [
        {"revs": [_rev("exp-a", 0.3, 0.41, []), _rev("exp-b", 0.6, 0.43, ["pole", "traffic_light", "wall"])]},
        {"revs": [_rev("exp-c", 0.5, 0.45, ["pole", "traffic_light"])]},  # the same run as the workspace
    ]
    head = {"rev": "abc123", "name": "main", "data": {"rev": "abc123", "params": {}, "metrics": {}}}  # no metrics
    table = sweep_table([ws, head], HARD.get)
    assert list(table.threshold) == [0.3, 0.5, 0.6]
    assert table.loc[table.threshold == 0.6, "hard classes"].item() == ["wall", "pole", "traffic light"]
    write_sweep_report(table, tmp_path / "t.md", tmp_path / "t.png")
    md = (tmp_path / "t.md").read_text()
    assert "| 0.5 | pole; light | **45.00** |" in md and "(none)" in md
    assert (tmp_path / "t.png").stat().st_size > 1000
    assert "on */val/night (selection split)" in md and "held-out split" not in md


def test_sweep_on_a_held_out_split_warns_against_choosing_from_it(tmp_path):
    rev = _rev("workspace", 0.5, 0.45, ["pole"])
    rev["data"]["params"]["params.yaml"]["data"]["splits"] = {"report": ["*/test/night"]}
    write_sweep_report(sweep_table([rev], HARD.get), tmp_path / "t.md", tmp_path / "t.png")
    md = (tmp_path / "t.md").read_text()
    assert "*/test/night (held out)" in md and "choose a threshold on the selection split instead" in md


def _seed_rev(name, seed, hdm, d, lo, hi):
    metrics = {"image.mIoU": 0.30, "merged_rdn.mIoU": 0.31, "merged_hdm.mIoU": hdm, "merged_entropy.mIoU": 0.305,
               "merged_gt.mIoU": 0.36, "hdm_vs_image.diff": d, "hdm_vs_image.ci_low": lo,
               "hdm_vs_image.ci_high": hi}
    params = {"params.yaml": {"data": {"seed": seed, "splits": {"report": ["*/test/night"]}}}}
    return {"rev": name, "name": name,
            "data": {"rev": name, "params": params, "metrics": {"reports/metrics.json": {"data": metrics}}}}


def test_seeds_report_gives_the_spread_and_counts_intervals_by_side(tmp_path):
    ws = _seed_rev("workspace", 0, 0.32, 0.02, 0.01, 0.03)
    ws["experiments"] = [{"revs": [_seed_rev("exp-1", 1, 0.30, 0.00, -0.01, 0.01)]},
                         {"revs": [_seed_rev("exp-2", 2, 0.34, 0.04, 0.02, 0.06)]},
                         {"revs": [_seed_rev("exp-0", 0, 0.32, 0.02, 0.01, 0.03)]}]  # the workspace again
    table = seeds_table([ws])
    assert list(table.seed) == [0, 1, 2]
    assert table["HDM - image"].mean() == pytest.approx(0.02)
    write_seeds_report(table, tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    assert "| mean | 30.00 | 31.00 | 32.00 |" in md
    assert "| s.d. | 0.00 | 0.00 | 2.00 |" in md  # image and RDN identical over seeds, HDM 30/32/34
    assert "HDM - image: interval above 0 on 2 of 3 seeds, below 0 on 0." in md
    assert "| 0 | 30.00 | 31.00 | 32.00 | 30.50 | 36.00 | 2.00 [1.00, 3.00] |" in md
