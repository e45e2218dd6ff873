"""flows.common.stage_inputs: checkpoints and task caches follow the contents of a stage's deps."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.common import fingerprint, stage_inputs  # noqa: E402

DVC_YAML = """stages:
  train:
    cmd: python -m flows.train
    deps:
      - code
      - data/labels.png
      - data/manifest.parquet:
          hash: md5
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "model.py").write_text("x = 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.png").write_bytes(b"\x00\x01")
    (tmp_path / "data" / "manifest.parquet").write_bytes(b"rows")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    return tmp_path


def test_label_content_change_with_same_paths_changes_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(_project(tmp_path))
    before = stage_inputs("train")
    assert before == stage_inputs("train")
    (tmp_path / "data" / "labels.png").write_bytes(b"\x00\x02")  # same path and size, new content
    assert stage_inputs("train") != before


def test_code_change_changes_the_key_but_bytecode_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(_project(tmp_path))
    before = stage_inputs("train")
    (tmp_path / "code" / "__pycache__").mkdir()
    (tmp_path / "code" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"compiled")
    assert stage_inputs("train") == before
    (tmp_path / "code" / "model.py").write_text("x = 2\n")
    assert stage_inputs("train") != before


def test_missing_and_renamed_files_are_distinguished(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "one.txt").write_text("same")
    b.mkdir()
    (b / "two.txt").write_text("same")
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(tmp_path / "absent") != fingerprint(a)
