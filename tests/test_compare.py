"""`nightlab compare`: headline numbers of git revisions and DVC experiments, in percent, in 120 columns."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from scaffold import commit, git

from nightlab_cli.main import main

RUN = {"image.mIoU": 0.363274, "image.hard_mIoU": 0.112885, "merged_rdn.mIoU": 0.375509,
       "merged_rdn.hard_mIoU": 0.13565, "merged_rdn.regions_per_image": 2.0, "merged_hdm.mIoU": 0.376274,
       "merged_hdm.hard_mIoU": 0.135564, "merged_hdm.regions_per_image": 2.0, "merged_gt.mIoU": 0.423347,
       "merged_gt.hard_mIoU": 0.220132, "hdm_vs_image.diff": 0.013, "hdm_vs_image.ci_low": 0.008816,
       "hdm_vs_image.ci_high": 0.017073, "hdm_vs_image.hard_diff": 0.022679, "hdm_vs_image.hard_ci_low": 0.015757,
       "hdm_vs_image.hard_ci_high": 0.029462, "hdm_vs_rdn.diff": 0.000765, "hdm_vs_rdn.ci_low": -0.002079,
       "hdm_vs_rdn.ci_high": 0.003772, "report.images": 120}


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A project with two commits of reports/metrics.json, a DVC experiment's commit and a changed workspace."""
    (tmp_path / "reports").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    metrics = tmp_path / "reports/metrics.json"
    git(tmp_path, "init", "-q")
    metrics.write_text(json.dumps(RUN))
    commit(tmp_path, "first run")
    metrics.write_text(json.dumps({**RUN, "merged_hdm.mIoU": 0.381, "hdm_vs_image.diff": 0.0177}))
    commit(tmp_path, "threshold 0.4")
    # `dvc exp run` keeps an experiment as a commit under refs/exps/<xx>/<baseline>/<name>
    metrics.write_text(json.dumps({**RUN, "merged_hdm.mIoU": 0.35}))
    commit(tmp_path, "exp")
    exp = git(tmp_path, "rev-parse", "HEAD").strip()
    git(tmp_path, "reset", "-q", "--hard", "HEAD~1")
    git(tmp_path, "update-ref", "refs/exps/ab/cdef0123/lucky-seed", exp)
    metrics.write_text(json.dumps({**RUN, "image.mIoU": 0.37}))  # a rerun, not committed
    monkeypatch.chdir(tmp_path / "reports")  # from a sub-directory of the project, too
    return tmp_path


def test_compare_two_commits_prints_both_in_percent_within_120_columns(repo, capsys):
    assert main(["compare", "HEAD~1", "HEAD"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    heads = [line for line in lines if line.startswith("== ")]
    assert len(heads) == 2 and heads[0].startswith("== HEAD~1 (") and "first run" in heads[0]
    assert heads[1].startswith("== HEAD (") and "threshold 0.4" in heads[1]
    first, second = out.split("\n== HEAD (")
    hdm = [line for line in first.splitlines() if "HDM boxes" in line][0]
    assert "37.6" in hdm and "13.6" in hdm and "0.376" not in hdm  # percent, not fractions
    assert "+1.3 [+0.9, +1.7]" in first and "+2.3 [+1.6, +2.9]" in first  # the claim with its interval
    assert "38.1 (+0.5)" in [line for line in second.splitlines() if "HDM boxes" in line][0]  # from the first
    assert "+1.8 [+0.9, +1.7]" in second


def test_compare_defaults_to_workspace_against_head_and_reads_experiments(repo, capsys):
    assert main(["compare"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("== ")]
    assert heads[0].startswith("== workspace") and heads[1].startswith("== HEAD (")
    assert main(["compare", "HEAD", "lucky-seed"]) == 0
    out = capsys.readouterr().out
    assert "== lucky-seed (" in out and "35.0 (-3.1)" in out


def test_compare_an_unknown_revision_is_one_error(repo, capsys):
    assert main(["compare", "HEAD", "no-such-exp"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no-such-exp: neither a git revision nor a DVC experiment") and err.count("error") == 1
