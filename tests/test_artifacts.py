"""The pipeline flow's Prefect artifacts, built from the tables and metrics the stages write."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from flows import pipeline

CLASSES = ["road", "pole", "rider"]


def _merged_run(root: Path) -> None:
    (root / "reports/merged").mkdir(parents=True)
    pd.DataFrame({"class_name": CLASSES, "hard": [False, True, True], "image": [0.9, 0.1, 0.2],
                  "merged_rdn": [0.9, 0.2, 0.2], "merged_hdm": [0.9, 0.3, 0.2], "merged_entropy": [0.9, 0.1, 0.25],
                  "merged_gt": [0.9, 0.5, 0.4]}).to_csv(root / "reports/merged/per_class_iou.csv", index=False)
    (root / "reports/metrics.json").write_text(json.dumps({
        "image.mIoU": 0.4, "image.hard_mIoU": 0.15, "merged_hdm.mIoU": 0.466667, "merged_hdm.hard_mIoU": 0.25,
        "merged_hdm.regions_per_image": 2.0, "hdm_vs_image.diff": 0.066667, "hdm_vs_image.ci_low": 0.01,
        "hdm_vs_image.ci_high": 0.12, "hdm_vs_image.hard_diff": 0.1, "hdm_vs_image.hard_ci_low": -0.004,
        "hdm_vs_image.hard_ci_high": 0.2, "report.images": 3}))


def test_per_class_rows_from_the_merged_table(tmp_path):
    _merged_run(tmp_path)
    source, rows = pipeline.per_class_rows(tmp_path)
    assert source == "reports/merged/per_class_iou.csv"
    by = {r["class"]: r for r in rows}
    assert [r["class"] for r in rows[:3]] == CLASSES
    assert by["pole"] == {"class": "pole", "hard": "yes", "image": "10.0", "RDN": "20.0", "HDM": "30.0",
                          "entropy": "10.0", "GT boxes": "50.0"}  # in percent
    assert by["road"]["hard"] == ""
    assert by["mIoU, all classes"]["HDM"] == "46.7" and by["mIoU, all classes"]["RDN"] == "43.3"  # table's mean
    assert by["mIoU, hard classes"]["image"] == "15.0"
    assert by["HDM - image, all classes (95% CI)"]["HDM"] == "+6.7 [+1.0, +12.0]"
    assert by["HDM - image, hard classes (95% CI)"]["HDM"] == "+10.0 [-0.4, +20.0]"
    assert by["HDM - image, all classes (95% CI)"]["image"] is None


def test_per_class_rows_image_level_alone(tmp_path):
    """Before evaluate_merged has run: per_class_iou's table, hard classes from reports/hard_classes.json."""
    (tmp_path / "reports/image").mkdir(parents=True)
    pd.DataFrame({"class_id": [0, 5, 12], "class_name": CLASSES, "iou": [0.9, 0.1, 0.2], "support": [9, 1, 1]}
                 ).to_csv(tmp_path / "reports/image/per_class_iou.csv", index=False)
    (tmp_path / "reports/image/metrics.json").write_text(json.dumps({"image.mIoU": 0.4}))
    (tmp_path / "reports/hard_classes.json").write_text(json.dumps({"names": ["pole", "rider"]}))
    source, rows = pipeline.per_class_rows(tmp_path)
    assert source == "reports/image/per_class_iou.csv"
    assert rows[1] == {"class": "pole", "hard": "yes", "image": "10.0"}
    assert {r["class"]: r["image"] for r in rows[3:]} == {"mIoU, all classes": "40.0", "mIoU, hard classes": "15.0"}
    assert pipeline.per_class_rows(tmp_path / "nothing") is None


def test_published_per_class_artifact_is_not_empty(tmp_path, monkeypatch):
    """What publish_metrics hands to Prefect: the per-class rows, and mIoU in percent."""
    _merged_run(tmp_path)
    tables, markdowns = {}, {}
    monkeypatch.setattr(pipeline, "create_table_artifact", lambda rows, key, description: tables.update({key: rows}))
    monkeypatch.setattr(pipeline, "create_markdown_artifact", lambda md, key, description: markdowns.update({key: md}))
    monkeypatch.setattr(pipeline, "get_run_logger", lambda: type("L", (), {"info": lambda *a: None})())
    pipeline.publish_metrics(tmp_path)
    rows = tables["nightlab-per-class-iou"]
    assert len(rows) >= len(CLASSES) and rows[1]["HDM"] == "30.0"
    assert "| merged_hdm | 46.7 |" in markdowns["nightlab-metrics"]
