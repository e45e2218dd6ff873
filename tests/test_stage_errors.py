"""Bad input to a stage: one clear error block (file and problem, no traceback), a non-zero exit,
and the previous run's outputs intact, whatever failed (a bad file, a config mistake, a full disk)."""
from __future__ import annotations

import hashlib
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import ROOT
from scaffold import copy_project

pytestmark = pytest.mark.e2e
OUTPUTS = ("data/manifest.parquet", "reports/data/summary.json", "reports/data/class_frequency.csv",
           "reports/data/samples.png", "data/prepared/sources.json")


def _folder_dataset(root: Path, n: int = 3, h: int = 48, w: int = 64) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(n):
            img = root / "images" / split / f"img_{i}.jpg"
            img.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            mask = root / "masks" / split / f"img_{i}.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mask), rng.integers(0, 19, (h, w), dtype=np.uint8))
    return root


def _digests(proj: Path) -> dict:
    return {rel: hashlib.md5((proj / rel).read_bytes()).hexdigest() for rel in OUTPUTS if (proj / rel).is_file()}


def _prepare(proj: Path, env: dict, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """check_source@<each source> then prepare_data, as `dvc repro prepare_data` runs them; the first that fails."""
    def limit():  # RLIMIT_FSIZE: a write past it fails with EFBIG, as on a full disk (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    sources = yaml.safe_load((proj / "params.yaml").read_text())["data"]["sources"]
    for cmd in [["flows.check_source", name] for name in sources] + [["flows.prepare_data"]]:
        res = subprocess.run([sys.executable, "-m", *cmd], cwd=proj, env=env, capture_output=True, text=True,
                             timeout=600, preexec_fn=limit if limit_bytes else None)
        if res.returncode != 0:
            break
    return res


def _folder(data: Path, **more) -> dict:
    """Params changes for a project whose only data is a folder dataset (trainIds masks) at ``data``."""
    return {"data.synthetic": None,
            "data.sources": {"mine": {"kind": "folder", "root": str(data), "encoding": "trainIds", **more}}}


@pytest.fixture
def folder_project(tmp_path, stage_env):
    """A project on a small folder dataset after one good prepare_data."""
    data = _folder_dataset(tmp_path / "dataset")
    proj = copy_project(tmp_path / "proj", changes=_folder(data))
    res = _prepare(proj, stage_env)
    assert res.returncode == 0, res.stderr[-3000:]
    return proj, data, _digests(proj)


def _assert_user_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    err = res.stderr
    assert "Traceback" not in err, err[-3000:]
    block = err[err.index("error: "):]
    for needle in needles:
        assert needle in block, (needle, block[-2000:])


def test_truncated_jpeg_is_refused_and_previous_outputs_stay(folder_project, stage_env):
    proj, data, before = folder_project
    img = data / "images" / "train" / "img_1.jpg"
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    res = _prepare(proj, stage_env)
    _assert_user_error(res, str(img), "truncated")
    assert _digests(proj) == before


def test_every_bad_file_is_reported_in_one_pass(folder_project, stage_env):
    proj, data, before = folder_project
    cut = [data / "images" / "train" / f"img_{i}.jpg" for i in (0, 2)]
    for img in cut:
        img.write_bytes(img.read_bytes()[:100])
    bad_mask = data / "masks" / "val" / "img_1.png"
    cv2.imwrite(str(bad_mask), np.full((48, 64), 77, np.uint8))
    empty = data / "masks" / "train" / "img_1.png"  # an interrupted copy: cv2.imdecode raises on no bytes
    empty.write_bytes(b"")
    res = _prepare(proj, stage_env)
    _assert_user_error(res, "4 bad file(s)", *map(str, cut), str(bad_mask), "encoding", f"{empty}: empty file")
    assert _digests(proj) == before


def test_a_full_disk_names_the_path_and_keeps_previous_outputs(folder_project, stage_env):
    proj, _, before = folder_project
    res = _prepare(proj, stage_env, limit_bytes=20_000)  # the manifest fits, the plots do not
    _assert_user_error(res, "File too large")
    assert _digests(proj) == before
    assert not [p for p in (proj / "reports" / "data").iterdir() if ".stage-" in p.name]  # no temporaries left


def test_no_split_named_train_is_fine(tmp_path, stage_env):
    data = _folder_dataset(tmp_path / "dataset")
    proj = copy_project(tmp_path / "proj", changes={**_folder(data, splits=["val"]), "splits.train": ["*/val/*"],
                                                     "splits.select": ["*/val/*"], "splits.report": ["*/val/*"],
                                                     "splits.report_on_select": True})
    res = _prepare(proj, stage_env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (proj / "reports/data/samples.png").is_file()


@pytest.mark.parametrize("changes, needle", [
    ({"data.sources": {"mine": {"kind": "folder", "root": "x", "splits": []}}}, "data.sources.mine.splits"),
    ({"data.sources": {"mine": {"kind": "folder", "root": "x", "splits": ["train", "train"], "encoding": "trainIds"}}},
     "more than once"),
    ({"data.sources": {"mine": {"kind": "folder", "root": "x"}}}, "encoding"),
    ({"data.kind": "folder", "data.root": "x"}, "data.sources: {folder: {kind: folder, root: x}}"),
    ({"hard_classes.threshold": "0.5"}, "hard_classes.threshold"),
])
def test_config_mistakes_are_one_block(tmp_path, stage_env, changes, needle):
    proj = copy_project(tmp_path / "proj")
    params = proj / "params.yaml"
    data = yaml.safe_load(params.read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = data
        for k in parents:
            node = node[k]
        node[last] = value
    params.write_text(yaml.safe_dump(data))
    res = _prepare(proj, stage_env)
    _assert_user_error(res, "params.yaml", needle)
    assert res.stderr.count("error:") == 1


def test_layout_note():
    """data/sources/ is where real datasets are declared to live (data.sources); its note keeps the folder."""
    assert (ROOT / "data" / "sources" / "README.md").is_file()


_FAILS_ONCE = '''
import errno, sys
from pathlib import Path
from prefect import flow
import flows.prepare_data as stage
from flows.common import catch_user_errors, task_results

def shard(out, split, indices, seed, cfg):
    if Path("disk-full").exists():
        raise OSError(errno.ENOSPC, "No space left on device", out)
    return [{"image": f"{split}/{i}.png"} for i in indices]

stage.generate_shard = shard
run = flow(name="fails-once")(catch_user_errors(
    lambda: task_results([stage.generate.submit("k", "out", "train", 0, [0, 1], 0, None)])))
state = run(return_state=True)
print("RESULT", state.message if state.is_failed() else state.result())
'''


def test_a_task_stopped_by_a_user_error_leaves_no_cached_result(tmp_path, stage_env):
    """A full disk during a generation shard, space freed, the rerun must generate, not take the failed
    task's cached nothing as done (`'NoneType' object is not iterable` on every rerun)."""
    (tmp_path / "fails_once.py").write_text(_FAILS_ONCE)
    env = {**stage_env, "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results")}

    def run() -> str:
        res = subprocess.run([sys.executable, "fails_once.py"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0 and "RESULT" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
        return res.stdout.split("RESULT ", 1)[1].strip()

    (tmp_path / "disk-full").touch()
    assert run() == "out: No space left on device"
    assert not list((tmp_path / "results").glob("generate-*"))  # no record of the failed task
    (tmp_path / "disk-full").unlink()
    assert run() == "[[{'image': 'train/0.png'}, {'image': 'train/1.png'}]]"
    assert len(list((tmp_path / "results").glob("generate-*"))) == 1
    assert run() == "[[{'image': 'train/0.png'}, {'image': 'train/1.png'}]]"  # now from the cache


def test_a_second_run_of_a_stage_stops_while_the_first_holds_its_lock(tmp_path, stage_env):
    """Two runs of one stage share its work directories: the second stops at once, naming the lock and
    its holder, instead of reading the first's half-written files; once the lock is free it runs."""
    import fcntl

    from flows.common import lock_file

    proj = copy_project(tmp_path / "proj")
    lock = proj / lock_file("select_hard_classes", proj / "dvc.yaml")
    lock.parent.mkdir(parents=True, exist_ok=True)
    stage = [sys.executable, "-m", "flows.select_hard_classes"]
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242 on elsewhere, since 2026-01-01T00:00:00+00:00\n")
        held.flush()
        res = subprocess.run(stage, cwd=proj, env=stage_env, capture_output=True, text=True, timeout=600)
    _assert_user_error(res, "reports/.select_hard_classes.stage-lock: another run of stage select_hard_classes "
                            "holds this lock (pid 4242 on elsewhere")
    assert res.stderr.count("error:") == 1
    res = subprocess.run(stage, cwd=proj, env=stage_env, capture_output=True, text=True, timeout=600)
    _assert_user_error(res, "per_class_iou.parquet: file not found")  # past the lock: its input is missing
    assert "another run" not in res.stderr
    assert "select_hard_classes" not in subprocess.run(["git", "status", "--short"], cwd=proj, capture_output=True,
                                                       text=True).stdout  # the lock file is ignored
