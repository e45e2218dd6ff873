"""The shipped params files are valid and complete for dvc.yaml (DVC refuses a missing key)."""
from pathlib import Path

import pytest
import yaml

from nightlab.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def _dvc_param_keys() -> set[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {k for s in stages.values() for k in s.get("params", []) if isinstance(k, str)}


@pytest.mark.parametrize("path", ["params.yaml", "profiles/tiny.yaml"])
def test_params_file_is_valid_and_has_every_key_dvc_needs(path):
    load_params(ROOT / path)
    data = yaml.safe_load((ROOT / path).read_text())
    for key in _dvc_param_keys():
        node = data
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{path} lacks {key} (named in dvc.yaml)"
            node = node[part]
