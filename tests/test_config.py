"""nightlab.config: defaults parse, bad values are refused with their dotted key and bound."""
from __future__ import annotations

import pydantic
import pytest
import yaml

from nightlab.config import (
    REAL_KINDS,
    ConfigError,
    Params,
    ParamsView,
    UndeclaredParam,
    load_params,
    parse_params,
    shared_rows,
)


def nested(dotted: str, value) -> dict:
    out: dict = {}
    cur = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def test_defaults_parse():
    p = parse_params({})
    assert isinstance(p, Params)
    assert p == parse_params(None)
    assert p.data.synthetic is not None and p.data.sources == {} and p.data.source_names() == ["synthetic"]
    assert p.hard_classes.threshold == 0.3
    assert p.boxes.min_area == 48 and p.boxes.min_size == 48  # native pixels of 512x1024 frames
    assert p.image_model.backbone == "resnet18"
    assert p.data.synthetic.splits() == ["train", "val", "test"]
    # each model has its own training defaults, the values of the default run
    assert (p.image_model.train.iters, p.image_model.train.batch_size, p.image_model.train.lr) == (300, 8, 0.002)
    assert (p.region_model.train.iters, p.region_model.train.batch_size) == (400, 32)
    assert (p.rdn.train.iters, p.rdn.train.batch_size, p.rdn.train.lr) == (1000, 4, 0.01)
    assert (p.hdm.finetune_iters, p.hdm.lr, p.hdm.batch_size) == (150, 0.005, 32)


def test_partial_train_block_keeps_the_models_own_defaults():
    p = parse_params({"rdn": {"train": {"iters": 50}}, "region_model": {"train": {"lr": 0.01}}})
    assert (p.rdn.train.iters, p.rdn.train.batch_size, p.rdn.train.lr) == (50, 4, 0.01)  # not the image model's
    assert (p.region_model.train.iters, p.region_model.train.batch_size) == (400, 32)


def test_load_params_file_overrides_and_empty_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"seed": 3, "hard_classes": {"threshold": 0.3},
                                 "data": {"sources": {"cs": {"kind": "cityscapes", "root": "/x"}},
                                          "synthetic": {"height": 128}}}))
    p = load_params(f)
    assert p.seed == 3
    assert p.hard_classes.threshold == 0.3
    assert p.data.sources["cs"].kind == "cityscapes" and p.data.sources["cs"].root == "/x"
    assert p.data.source_names() == ["synthetic", "cs"]
    assert p.data.synthetic.height == 128
    assert p.data.synthetic.width == 1024  # untouched sibling keeps its default
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_params(empty) == parse_params({})


def test_params_are_frozen():
    p = parse_params({})
    with pytest.raises(pydantic.ValidationError):
        p.hard_classes.threshold = 0.9


@pytest.mark.parametrize("key, value, bound", [
    ("hard_classes.threshold", 1.7, "1"),
    ("hard_classes.threshold", -0.1, "0"),
    ("boxes.min_area", -3, "0"),
    ("boxes.connectivity", 6, "8"),
    ("data.synthetic.height", -5, "64"),
    ("data.synthetic.width", 10_000, "4096"),
    ("image_model.image_scale", 0.0, "0"),
    ("image_model.train.lr", -1.0, "0"),
    ("region_model.region_size", 8, "16"),
    ("merge.max_regions", 5000, "1000"),
    ("seed", -1, "0"),
])
def test_bad_values_name_key_and_bound(key, value, bound):
    with pytest.raises(ConfigError) as exc:
        parse_params(nested(key, value))
    msg = str(exc.value)
    assert key in msg
    assert repr(value) in msg  # the offending value is shown
    assert bound in msg.split(key, 1)[1]  # the bound is stated on the key's line


def test_threshold_message_exact_shape(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("hard_classes:\n  threshold: 1.7\n")
    with pytest.raises(ConfigError) as exc:
        load_params(f)
    msg = str(exc.value)
    assert str(f) in msg  # names the file
    line = next(ln for ln in msg.splitlines() if "hard_classes.threshold" in ln)
    assert "1.7" in line and "less than or equal to 1" in line


def _source(**kw) -> dict:
    return {"data": {"sources": {"mine": {"root": "/data", **kw}}}}


def test_unknown_dataset_kind_lists_allowed_kinds():
    with pytest.raises(ConfigError) as exc:
        parse_params(_source(kind="kitti"))
    msg = str(exc.value)
    assert "data.sources.mine.kind" in msg and "kitti" in msg
    for kind in REAL_KINDS:
        assert kind in msg


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_every_dataset_kind_accepted(kind):
    p = parse_params(_source(kind=kind, **({"encoding": "trainIds"} if kind == "folder" else {})))
    assert p.data.sources["mine"].kind == kind


def test_folder_needs_an_explicit_encoding():
    with pytest.raises(ConfigError, match="folder needs encoding"):
        parse_params(_source(kind="folder"))


@pytest.mark.parametrize("kind, encoding", [("nightcity", "trainIds"), ("acdc", "trainIds"), ("darkzurich", "trainIds"),
                                            ("bdd100k", "labelIds")])
def test_encoding_a_dataset_does_not_have_is_refused_in_one_short_line(kind, encoding):
    with pytest.raises(ConfigError) as exc:
        parse_params(_source(kind=kind, encoding=encoding, splits=["train"], domain="night"))
    line = str(exc.value).splitlines()[1]
    assert line.startswith(f"  data.sources.mine.encoding = {encoding!r}: kind {kind} allows encoding auto or ")
    assert "root" not in line and "splits" not in line  # the key and the allowed values, not the whole source


@pytest.mark.parametrize("crop", [[-10, 20], [0, 0], [16, 64]])
def test_a_training_crop_must_have_positive_sides_of_at_least_32(crop):
    with pytest.raises(ConfigError, match=r"image_model.train.crop = \[.*\]: each side of the crop must be at least"):
        parse_params(nested("image_model.train.crop", crop))
    assert parse_params(nested("image_model.train.crop", [32, 64])).image_model.train.crop == (32, 64)


@pytest.mark.parametrize("split", ["val/", "train/night", "", "*", "..", " val"])
def test_a_split_must_be_a_folder_name(split):
    """'val/' scans the same folder as 'val' but stores a split that no selector matches."""
    with pytest.raises(ConfigError) as exc:
        parse_params(_source(kind="nightcity", splits=["train", split]))
    msg = str(exc.value)
    assert "data.sources.mine.splits" in msg and repr(split) in msg and "folder names" in msg
    assert "'train'" not in msg.split("must be")[0].split("split(s)")[1]  # only the bad one is named


def test_real_data_only_and_no_data_at_all():
    p = parse_params({"data": {"synthetic": None, "sources": {"nc": {"kind": "nightcity", "root": "/nc"}}}})
    assert p.data.synthetic is None and p.data.source_names() == ["nc"]
    with pytest.raises(ConfigError, match="no data"):
        parse_params({"data": {"synthetic": None}})
    with pytest.raises(ConfigError, match="0 scenes in every split"):
        parse_params({"data": {"synthetic": {"train": 0, "val": 0, "test": 0}}})
    with pytest.raises(ConfigError, match="generator's"):
        parse_params({"data": {"sources": {"synthetic": {"kind": "nightcity", "root": "/nc"}}}})


@pytest.mark.parametrize("old, rewrite", [
    ({"kind": "nightcity", "root": "/datasets/NightCity", "splits": ["train", "val"]},
     "data.sources: {nightcity: {kind: nightcity, root: /datasets/NightCity, splits: [train, val]}}"),
    ({"kind": "synthetic", "splits": ["train", "val", "test"]}, "non-zero scene count"),
    ({"kind": "none", "sources": {"nc": {"kind": "nightcity", "root": "/nc"}}}, "data.synthetic: null"),
])
def test_the_old_one_source_shorthand_gets_one_message_saying_how_to_write_it(old, rewrite):
    with pytest.raises(ConfigError) as exc:
        parse_params({"data": old})
    msg = str(exc.value)
    assert rewrite in msg
    lines = [ln for ln in msg.splitlines() if "data.kind" in ln or "data.root" in ln or "data.splits" in ln]
    assert len(lines) == 1, msg  # one message for all the shorthand's keys


@pytest.mark.parametrize("key, value", [
    ("hard_classes.threshold", "0.5"),  # a string is not a number
    ("hard_classes.threshold", True),  # nor is a bool
    ("image_model.train.iters", 3.5),
    ("image_model.light_adaptation", 1),  # 1 is not true
    ("splits.report_on_select", "yes"),
])
def test_yaml_types_are_kept(key, value):
    with pytest.raises(ConfigError) as exc:
        parse_params(nested(key, value))
    assert key in str(exc.value)


@pytest.mark.parametrize("splits, message", [
    ([], "at least 1"),
    (["train", "train", "val"], "more than once"),
])
def test_bad_split_lists_are_refused(splits, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(_source(kind="nightcity", splits=splits))


@pytest.mark.parametrize("key, why", [
    ("hdm.crop_iou", "hdm.criterion"),
    ("data.synthetic.workers", "never did anything"),
    ("rdn.train.crop", "whole images"),
    ("region_model.train.crop", "region_size"),
    ("hard_classes.split", "splits.select"),
])
def test_removed_keys_say_why(key, why):
    with pytest.raises(ConfigError) as exc:
        parse_params(nested(key, "x"))
    assert key in str(exc.value) and "removed" in str(exc.value) and why in str(exc.value)


def test_splits_are_selectors_and_report_must_be_held_out_unless_allowed():
    p = parse_params({"splits": {"select": "nightcity/val/night", "report": ["darkzurich/val/*"],
                                 "report_on_select": False}})
    assert str(p.splits.select[0]) == "nightcity/val/night" and p.splits.report[0].matches("darkzurich", "val", "day")
    with pytest.raises(ConfigError, match="not held out"):
        parse_params({"splits": {"select": ["*/val/night"], "report": ["*/val/*"], "report_on_select": False}})
    allowed = parse_params({"splits": {"select": ["*/val/night"], "report": ["*/val/night"], "report_on_select": True}})
    assert shared_rows(allowed.splits.select, allowed.splits.report) == ["*/val/night"]
    with pytest.raises(ConfigError, match="source/split/domain"):
        parse_params({"splits": {"train": ["train"]}})
    with pytest.raises(ConfigError, match="domain must be"):
        parse_params({"splits": {"train": ["*/train/dusk"]}})


def test_params_view_allows_only_declared_keys():
    view = ParamsView(parse_params({}), ["seed", "hard_classes.threshold", "merge", "splits.select"], stage="s")
    assert view.seed == 0 and view.hard_classes.threshold == 0.3 and view.merge.max_regions == 2
    assert str(view.splits.select[0]) == "*/val/night"
    with pytest.raises(UndeclaredParam, match="'splits.report'"):
        view.splits.report  # noqa: B018
    with pytest.raises(UndeclaredParam, match="'device'"):
        view.device  # noqa: B018
    with pytest.raises(UndeclaredParam):
        view.model_dump()
    assert view.seen == {"seed", "hard_classes.threshold", "merge", "splits.select"}


@pytest.mark.parametrize("key", ["image_model.backbone", "region_model.backbone", "rdn.backbone"])
def test_unknown_timm_backbone_refused(key):
    with pytest.raises(ConfigError) as exc:
        parse_params(nested(key, "resnet_doesnotexist"))
    msg = str(exc.value)
    assert key in msg
    assert "resnet_doesnotexist" in msg and "timm" in msg


def test_known_timm_backbone_accepted():
    assert parse_params({"image_model": {"backbone": "resnet34"},
                         "region_model": {"backbone": "resnet34"}}).image_model.backbone == "resnet34"


def test_region_init_image_needs_the_image_models_network():
    with pytest.raises(ConfigError, match="region_model and image_model differ in backbone"):
        parse_params({"image_model": {"backbone": "resnet34"}})
    with pytest.raises(ConfigError, match="region_model.pretrained must be null"):
        parse_params({"region_model": {"pretrained": "timm"}})
    p = parse_params({"image_model": {"backbone": "resnet34"}, "region_model": {"init": "scratch"}})
    assert p.region_model.backbone == "resnet18"  # from scratch, the region model keeps its own network


@pytest.mark.parametrize("data, key", [
    ({"hard_clases": {"threshold": 0.4}}, "hard_clases"),  # typo at top level
    ({"boxes": {"min_aera": 3}}, "boxes.min_aera"),  # typo in a section
    ({"image_model": {"train": {"iter": 5}}}, "image_model.train.iter"),  # typo two levels down
])
def test_unknown_key_refused(data, key):
    with pytest.raises(ConfigError) as exc:
        parse_params(data)
    msg = str(exc.value)
    assert key in msg
    assert "unknown key" in msg


def test_shared_rdn_backbone_accepted_at_the_image_models_scale_only():
    assert parse_params({"rdn": {"backbone": "shared"}}).rdn.backbone == "shared"
    with pytest.raises(ConfigError, match=r"rdn.image_scale 0.5 must equal image_model.image_scale 0.25"):
        parse_params({"rdn": {"backbone": "shared", "image_scale": 0.5}})
    with pytest.raises(ConfigError, match=r"rdn.pretrained.*must be null with rdn.backbone: shared"):
        parse_params({"rdn": {"backbone": "shared", "pretrained": "timm"}})


def test_rdn_iou_order_refused():
    with pytest.raises(ConfigError, match="bg_iou_thresh must be <= fg_iou_thresh"):
        parse_params({"rdn": {"fg_iou_thresh": 0.3, "bg_iou_thresh": 0.6}})


def test_bad_list_element_reports_index_and_value():
    with pytest.raises(ConfigError) as exc:
        parse_params({"image_model": {"train": {"domains": ["night", "dusk"]}}})
    line = next(ln for ln in str(exc.value).splitlines() if "image_model.train.domains.1" in ln)
    assert "'dusk'" in line


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        parse_params({"hard_classes": {"threshold": 2.0}, "boxes": {"min_area": -1}})
    msg = str(exc.value)
    assert "hard_classes.threshold" in msg and "boxes.min_area" in msg


def test_missing_params_file(tmp_path):
    f = tmp_path / "nope" / "params.yaml"
    with pytest.raises(ConfigError) as exc:
        load_params(f)
    assert str(f) in str(exc.value) and "not found" in str(exc.value)


def test_invalid_yaml_names_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data:\n  kind: [synthetic\n")
    with pytest.raises(ConfigError) as exc:
        load_params(f)
    assert str(f) in str(exc.value) and "YAML" in str(exc.value)


def test_non_mapping_top_level_names_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as exc:
        load_params(f)
    assert str(f) in str(exc.value) and "mapping" in str(exc.value)


def test_binary_params_file_names_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ConfigError) as exc:
        load_params(f)
    assert str(f) in str(exc.value)
