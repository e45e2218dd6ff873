"""`nightlab report status`: a report is judged on the stages it used, and says what changed in them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from scaffold import ROOT, commit, git

from nightlab.provenance import changes, lock_stages, snapshot, used_stages
from nightlab_cli import main as cli


def _lock(threshold=0.3, iters=300, model_md5="m1", baseline_md5="b1") -> dict:
    code = {"path": "flows/common.py", "md5": "c1"}
    return {"schema": "2.0", "stages": {
        "prepare_data": {"cmd": "x", "deps": [code], "params": {"params.yaml": {"data": {"seed": 0}}},
                         "outs": [{"path": "data/prepared", "md5": "d1.dir"}]},
        "train_image_model": {"cmd": "x", "deps": [code, {"path": "data/prepared", "md5": "d1.dir"}],
                              "params": {"params.yaml": {"image_model.train": {"iters": iters}}},
                              "outs": [{"path": "models/image", "md5": model_md5}]},
        "select_hard_classes": {"cmd": "x", "deps": [{"path": "models/image", "md5": model_md5}],
                                "params": {"params.yaml": {"hard_classes.threshold": threshold}},
                                "outs": [{"path": "reports/hard_classes.json", "md5": f"h{threshold}"}]},
        "evaluate_merged": {"cmd": "x", "deps": [{"path": "reports/hard_classes.json", "md5": f"h{threshold}"},
                                                 {"path": "models/image", "md5": model_md5}],
                            "outs": [{"path": "reports/metrics.json", "md5": f"r{threshold}{iters}"}]},
        "train_baseline@longer": {"cmd": "x", "deps": [{"path": "data/prepared", "md5": "d1.dir"}],
                                  "outs": [{"path": "models/baselines/longer", "md5": baseline_md5}]},
        "per_class_iou": {"cmd": "x", "deps": [{"path": "models/image", "md5": model_md5}],
                          "outs": [{"path": "reports/image/metrics.json", "md5": f"i{iters}"}]},
    }}


def _write_lock(proj: Path, **kw) -> None:
    (proj / "dvc.lock").write_text(yaml.safe_dump(_lock(**kw), sort_keys=False))


@pytest.fixture
def proj(tmp_path, monkeypatch) -> Path:
    """A temporary project copy: dvc.yaml, a dvc.lock, and a sweep report made against it."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    _write_lock(tmp_path)
    git(tmp_path, "init", "-q")
    commit(tmp_path, "default run")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/sweep").mkdir(parents=True)
    (tmp_path / "reports/sweep/provenance.json").write_text(json.dumps(cli._provenance(("reports/metrics.json",))))
    (tmp_path / "reports/ablations").mkdir(parents=True)
    (tmp_path / "reports/ablations/provenance.json").write_text(
        json.dumps(cli._provenance(("reports/image/metrics.json",))))
    return tmp_path


def test_a_report_uses_the_stages_behind_its_metrics():
    stages = lock_stages(yaml.safe_dump(_lock(), sort_keys=False))
    assert used_stages(stages, ["reports/metrics.json"]) == ["prepare_data", "train_image_model",
                                                             "select_hard_classes", "evaluate_merged"]
    assert used_stages(stages, ["reports/image/metrics.json"]) == ["prepare_data", "train_image_model",
                                                                   "per_class_iou"]


def test_status_names_the_changed_params_and_outputs_of_the_stages_a_report_used(proj, capsys):
    assert cli.main(["report", "status"]) == 0
    out = capsys.readouterr().out
    assert "current  reports/sweep" in out and "the 4 stages it used are unchanged" in out

    _write_lock(proj, baseline_md5="b2")  # a stage no report used
    assert cli.main(["report", "status"]) == 0
    assert "STALE" not in capsys.readouterr().out

    _write_lock(proj, threshold=0.4)  # the sweep's stages changed; the ablations' did not
    assert cli.main(["report", "status"]) == 1
    out = capsys.readouterr().out
    sweep = out.split("reports/sweep")[1]
    assert "current  reports/ablations" in out and "STALE    reports/sweep" in out
    assert "select_hard_classes" in sweep and "params: hard_classes.threshold 0.3 -> 0.4" in sweep
    assert "outputs: reports/hard_classes.json" in sweep and "outputs: reports/metrics.json" in sweep
    assert "train_image_model" not in sweep
    assert max(map(len, out.splitlines())) <= 120

    _write_lock(proj, iters=400, model_md5="m2")
    assert cli.main(["report", "status"]) == 1
    out = capsys.readouterr().out
    assert "image_model.train.iters 300 -> 400" in out.split("reports/ablations")[1].split("reports/sweep")[0]
    assert "outputs: models/image" in out


def test_an_older_report_is_judged_on_dvc_lock_at_its_revision(proj, capsys):
    """A provenance of only a git revision and the md5 of dvc.lock (as committed reports have)."""
    rev = git(proj, "rev-parse", "HEAD").strip()
    md5 = cli._provenance()["dvc_lock_md5"]
    (proj / "reports/sweep/provenance.json").write_text(json.dumps({"git_rev": rev, "dvc_lock_md5": md5}))
    shutil.rmtree(proj / "reports/ablations")
    assert cli.main(["report", "status"]) == 0
    _write_lock(proj, threshold=0.5)
    assert cli.main(["report", "status"]) == 1
    out = capsys.readouterr().out
    assert f"per dvc.lock at {rev[:10]}" in out and "hard_classes.threshold 0.3 -> 0.5" in out
    (proj / "reports/sweep/provenance.json").write_text(json.dumps({"git_rev": rev, "dvc_lock_md5": "other"}))
    assert cli.main(["report", "status"]) == 1
    assert "cannot tell what changed: it was made against an uncommitted dvc.lock" in capsys.readouterr().out


def test_the_projects_own_dvc_lock_in_a_temporary_copy(tmp_path):
    """The real dvc.lock: a report on reports/metrics.json uses every stage up to evaluate_merged, and a
    changed merge.max_regions names that stage and key."""
    text = (ROOT / "dvc.lock").read_text()
    then = snapshot(text, ["reports/metrics.json"])
    assert {"prepare_data", "train_image_model", "select_hard_classes", "evaluate_merged"} <= set(then)
    assert changes(then, lock_stages(text)) == {}
    data = yaml.safe_load(text)
    params = data["stages"]["evaluate_merged"]["params"]["params.yaml"]
    params["merge"]["max_regions"] = params["merge"]["max_regions"] + 3
    found = changes(then, lock_stages(yaml.safe_dump(data)))
    assert list(found) == ["evaluate_merged"]
    assert found["evaluate_merged"][0][0] == "params" and "merge.max_regions" in found["evaluate_merged"][0][1][0]
