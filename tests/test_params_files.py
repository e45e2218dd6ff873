"""The shipped params files: params.yaml is exactly the defaults of nightlab/config.py (one source of
defaults), and each profile loads to the values it is meant to have."""
from pathlib import Path

import pytest
import yaml

from nightlab.config import Params, load_params, load_profile
from nightlab.config.writer import DEFAULT_HEADER, params_yaml

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
    assert p.device == "cpu" and p.hard_classes.threshold == 0.3


REAL_PROFILES = ["profiles/nightcity_cityscapes.yaml", "profiles/acdc_night.yaml"]


def _real_profile_common(p) -> None:
    """What both real-data profiles share: one GPU, timm weights, full-resolution sizes, bounded loading."""
    assert p.device == "cuda" and p.data.synthetic is None and p.distributed.nproc_per_node == 1
    for section in (p.image_model, p.region_model, p.rdn):
        assert section.backbone == "resnet50"
        assert section.train.cache_mb == 0 and section.train.workers >= 8  # decode on demand, in workers
    assert p.image_model.pretrained == p.rdn.pretrained == "timm"
    assert p.region_model.init == "image" and p.region_model.pretrained is None  # inherits the image model's
    assert p.image_model.decoder_channels == p.region_model.decoder_channels == 256
    assert p.image_model.train.crop is not None  # sources of two frame sizes: batches need one size
    assert p.rdn.train.domains == ("night",)  # whole-image RDN batches: the night source's one size
    assert p.rdn.fpn and p.rdn.anchor_sizes == "auto"
    assert (p.image_model.train.batch_size, p.region_model.train.batch_size, p.rdn.train.batch_size) == (8, 32, 4)
    assert (p.image_model.train.iters, p.region_model.train.iters, p.rdn.train.iters) == (40000, 20000, 20000)
    assert p.region_model.region_size == 256 and p.splits.report_on_select
    assert all(s.root.startswith("/datasets/") for s in p.data.sources.values())  # placeholders to edit


def test_nightcity_cityscapes_profile_values():
    p = load_profile(ROOT / "profiles/nightcity_cityscapes.yaml")
    _real_profile_common(p)
    src = p.data.sources
    assert (src["nightcity"].kind, src["nightcity"].splits) == ("nightcity", ("train", "val"))
    assert (src["cityscapes"].kind, src["cityscapes"].splits) == ("cityscapes", ("train",))
    assert [str(s) for s in p.splits.train] == ["nightcity/train/*", "cityscapes/train/*"]
    assert [str(s) for s in p.splits.select] == [str(s) for s in p.splits.report] == ["nightcity/val/night"]
    # NightCity frames are 1024x512: seen whole at image_scale 1.0; Cityscapes (2048x1024) as 512x1024 crops
    assert p.image_model.image_scale == p.rdn.image_scale == 1.0 and p.image_model.train.crop == (512, 1024)


def test_acdc_night_profile_values():
    p = load_profile(ROOT / "profiles/acdc_night.yaml")
    _real_profile_common(p)
    src = p.data.sources
    assert (src["acdc"].kind, src["acdc"].splits) == ("acdc", ("train", "val"))
    assert (src["cityscapes"].kind, src["cityscapes"].splits) == ("cityscapes", ("train",))
    assert [str(s) for s in p.splits.train] == ["cityscapes/train/*", "acdc/train/night"]
    assert [str(s) for s in p.splits.select] == [str(s) for s in p.splits.report] == ["acdc/val/night"]
    # ACDC 1920x1080 and Cityscapes 2048x1024 at scale 0.5: a 512x960 crop fits both without padding
    assert p.image_model.image_scale == p.rdn.image_scale == 0.5 and p.image_model.train.crop == (512, 960)
    assert all(h * 0.5 >= 512 and w * 0.5 >= 960 for h, w in ((1080, 1920), (1024, 2048)))


@pytest.mark.parametrize("path", REAL_PROFILES)
def test_real_profiles_write_a_params_file_dvc_can_read(tmp_path, path):
    """`nightlab params --profile` output: complete, and every source gets its check_source stage key."""
    p = load_profile(ROOT / path)
    out = tmp_path / "params.yaml"
    out.write_text(params_yaml(p))
    assert load_params(out) == p
    data = yaml.safe_load(out.read_text())
    assert set(data["data"]["sources"]) == set(p.data.sources) and data["data"]["synthetic"] is None


def test_default_cache_holds_the_default_training_set():
    """The default cache_mb keeps every decoded frame of the default data: the default run reads each
    file once, as before the cache was bounded (docs in nightlab/data/dataset.py). The region model
    caches native frames; the image model and the RDN cache frames at their image_scale."""
    p = Params()
    s = p.data.synthetic
    frames = 2 * s.train  # each scene by day and by night
    native_mb = frames * s.height * s.width * 4 / 2**20  # RGB + trainIds
    assert native_mb < p.region_model.train.cache_mb
    assert native_mb * p.image_model.image_scale ** 2 < p.image_model.train.cache_mb
    assert native_mb * p.rdn.image_scale ** 2 < p.rdn.train.cache_mb


def test_studies_profile_drops_only_the_baselines():
    """The studies' profile must measure the default method: the same params less the baselines
    (nightlab.sweep lets an experiment differ from the workspace in those alone)."""
    p = load_profile(ROOT / "profiles/studies.yaml")
    assert p.baselines == {}
    assert p.model_dump(exclude={"baselines"}) == Params().model_dump(exclude={"baselines"})
