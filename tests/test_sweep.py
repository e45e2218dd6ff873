"""The threshold-sweep report reads DVC's `exp show --json` shape."""
from nightlab.sweep import sweep_table, write_sweep_report

HARD: dict[str, list[str]] = {}  # what each revision's reports/hard_classes.json would say


def _rev(name, thr, merged, hard):
    HARD[name] = [h.replace("_", " ") for h in hard]
    metrics = {"image.mIoU": 0.4, "merged_hdm.mIoU": merged}
    params = {"params.yaml": {"data": {"hard_classes": {"threshold": thr}}}}
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
