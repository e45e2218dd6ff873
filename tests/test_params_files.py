"""The shipped params files: params.yaml is exactly the defaults of nightlab/config.py (one source of
defaults), and each profile loads to the values it is meant to have."""
from pathlib import Path

import pytest
import yaml

from nightlab.config import DEFAULT_HEADER, Params, load_params, load_profile, params_yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "profiles").glob("*.yaml"))


def test_params_yaml_is_the_defaults_written_out():
    shipped = (ROOT / "params.yaml").read_text()
    assert shipped == params_yaml(Params(), DEFAULT_HEADER), (
        "params.yaml differs from the defaults in nightlab/config.py: run `nightlab params` to rewrite it")
    assert load_params(ROOT / "params.yaml") == Params()


def test_written_params_round_trip_for_every_key(tmp_path):
    p = load_profile(ROOT / "profiles/tiny.yaml")
    out = tmp_path / "params.yaml"
    out.write_text(params_yaml(p))
    assert load_params(out) == p
    data = yaml.safe_load(out.read_text())
    assert set(data) == set(Params.model_fields)  # complete: DVC finds every key a stage names


@pytest.mark.parametrize("path", PROFILES)
def test_every_profile_loads_on_top_of_the_defaults(path):
    load_profile(ROOT / path)


def test_tiny_profile_values():
    p = load_profile(ROOT / "profiles/tiny.yaml")
    assert (p.data.synthetic.height, p.data.synthetic.width, p.data.synthetic.train) == (64, 128, 6)
    assert p.image_model.train.iters == 3 and p.region_model.train.iters == 3 and p.rdn.train.iters == 3
    assert p.rdn.train.batch_size == 2 and p.rdn.train.lr == 0.01  # untouched keys keep the RDN's own defaults
    assert p.device == "cpu" and p.hard_classes.threshold == 0.5
