"""nightlab.data.synthetic: deterministic Cityscapes-layout scenes with consistent labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nightlab.data.adapters import scan
from nightlab.data.manifest import check_sample, decode_label
from nightlab.data.synthetic import EGO, generate_scene, layout_scene, scene_rng
from nightlab.io import read_image, read_label
from nightlab.labels import CLASS_IDS, IGNORE, INSTANCE_CLASSES, NUM_CLASSES, VALID_LABEL_IDS, train_ids_to_label_ids

H, W = 128, 256


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed(tmp_path):
    a = generate_scene(tmp_path / "a", "train", 3, seed=7, h=H, w=W)
    b = generate_scene(tmp_path / "b", "train", 3, seed=7, h=H, w=W)
    c = generate_scene(tmp_path / "c", "train", 3, seed=8, h=H, w=W)
    assert a == b == c  # same rows (names do not depend on the seed)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(fa) == 6  # day + night: image, labelIds, instanceIds each
    assert fa == fb  # byte for byte
    assert set(fa) == set(fc)
    for rel in fa:  # another seed changes every image and label
        assert fa[rel] != fc[rel], rel
    # another index (same seed) is another scene
    generate_scene(tmp_path / "d", "train", 4, seed=7, h=H, w=W)
    assert not (np.asarray(read_label(tmp_path / "d" / a[0]["label"].replace("00003", "00004")))
                == read_label(tmp_path / "a" / a[0]["label"])).all()


def test_order_independent(tmp_path):
    """Deterministic in (seed, split, index): generating others first changes nothing."""
    generate_scene(tmp_path / "a", "val", 0, seed=1, h=H, w=W)
    generate_scene(tmp_path / "a", "val", 1, seed=1, h=H, w=W)
    generate_scene(tmp_path / "b", "val", 1, seed=1, h=H, w=W)
    generate_scene(tmp_path / "b", "val", 0, seed=1, h=H, w=W)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_cityscapes_layout_and_rows(tmp_path):
    out = tmp_path / "synth"
    rows = generate_scene(out, "val", 2, seed=0, h=H, w=W)
    assert [r["domain"] for r in rows] == ["day", "night"]
    for r in rows:
        d = r["domain"]
        name = f"synth_val_00002_{d}"
        assert r["image"] == f"leftImg8bit/val/{d}/{name}_leftImg8bit.png"
        assert r["label"] == f"gtFine/val/{d}/{name}_gtFine_labelIds.png"
        assert r["instance"] == f"gtFine/val/{d}/{name}_gtFine_instanceIds.png"
        assert (r["split"], r["height"], r["width"]) == ("val", H, W)
        assert (r["source"], r["encoding"]) == ("synthetic", "labelIds")
        c = check_sample(out, r)
        assert (c.height, c.width) == (H, W)
        assert read_image(out / r["image"]).shape == (H, W, 3)
    # the Cityscapes adapter reads the generated set back as the same samples
    df = scan("cityscapes", out, ["val"])
    got = sorted(zip(df.domain, df.image, df.label, df.instance))
    assert got == sorted((r["domain"], r["image"], r["label"], r["instance"]) for r in rows)
    # no temporary files left behind
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_label_ids_decode_to_train_ids(tmp_path):
    rows = generate_scene(tmp_path, "train", 5, seed=2, h=H, w=W)
    expected = layout_scene(H, W, scene_rng(2, "train", 5)).label.copy()
    assert (expected == EGO).any()  # the ego hood is there ...
    expected[expected == EGO] = IGNORE  # ... and is ignore in trainIds
    day_raw = read_label(tmp_path / rows[0]["label"], dtype=None)
    night_raw = read_label(tmp_path / rows[1]["label"], dtype=None)
    assert day_raw.dtype == np.uint8
    np.testing.assert_array_equal(day_raw, night_raw)  # one layout, two renderings
    assert set(np.unique(day_raw).tolist()) <= VALID_LABEL_IDS
    assert (day_raw[expected == IGNORE] == 1).all()  # written as labelId 1 (ego vehicle)
    for r in rows:
        np.testing.assert_array_equal(decode_label(tmp_path / r["label"], "labelIds"), expected)


def test_every_object_class_the_generator_draws_carries_instance_ids():
    """The generator writes labelId * 1000 + k for these classes; cityscapesscripts must agree."""
    assert {"person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"} <= INSTANCE_CLASSES


def test_instance_ids(tmp_path):
    rows = generate_scene(tmp_path, "train", 1, seed=0, h=H, w=W)
    train = decode_label(tmp_path / rows[0]["label"], "labelIds")
    label_ids = read_label(tmp_path / rows[0]["label"], dtype=None).astype(np.int64)
    raw = read_label(tmp_path / rows[0]["instance"], dtype=None)
    assert raw.dtype == np.uint16
    inst = raw.astype(np.int64)
    thing = np.isin(train, [CLASS_IDS[c] for c in INSTANCE_CLASSES])
    assert thing.any()
    assert (inst[thing] >= 1000).all()
    np.testing.assert_array_equal(inst[thing] // 1000, label_ids[thing])  # labelId * 1000 + k
    assert (inst[~thing] < 1000).all()
    np.testing.assert_array_equal(inst[~thing], label_ids[~thing])  # stuff carries its labelId
    np.testing.assert_array_equal(raw, read_label(tmp_path / rows[1]["instance"], dtype=None))
    # several objects of one class get distinct ids
    assert len(np.unique(inst[thing])) >= 2


def test_night_is_darker_than_day(tmp_path):
    day_means, night_means = [], []
    for i in range(6):
        rows = generate_scene(tmp_path, "train", i, seed=0, h=H, w=W)
        day = read_image(tmp_path / rows[0]["image"]).astype(np.float32)
        night = read_image(tmp_path / rows[1]["image"]).astype(np.float32)
        sky = decode_label(tmp_path / rows[0]["label"], "labelIds") == CLASS_IDS["sky"]
        assert night.mean() < day.mean(), i
        assert night[sky].mean() < 60 < 100 < day[sky].mean(), i  # dark night sky, bright day sky
        assert night.max() >= 200, i  # but lamps and headlights are bright
        day_means.append(day.mean())
        night_means.append(night.mean())
    assert np.mean(night_means) < 0.75 * np.mean(day_means)


def test_all_train_classes_appear(tmp_path):
    seen: set[int] = set()
    for i in range(30):
        rows = generate_scene(tmp_path, "train", i, seed=0, h=H, w=W)
        seen |= set(np.unique(decode_label(tmp_path / rows[0]["label"], "labelIds")).tolist())
    assert set(range(NUM_CLASSES)) <= seen, sorted(set(range(NUM_CLASSES)) - seen)
    assert seen <= set(range(NUM_CLASSES)) | {IGNORE}


@pytest.mark.parametrize("h, w", [(64, 64), (96, 320)])
def test_other_sizes(tmp_path, h, w):
    rows = generate_scene(tmp_path, "test", 0, seed=0, h=h, w=w)
    for r in rows:
        c = check_sample(tmp_path, r)
        assert (c.height, c.width) == (h, w)
    lab = layout_scene(h, w, scene_rng(0, "test", 0)).label
    assert lab.shape == (h, w)
    assert (train_ids_to_label_ids(np.where(lab == EGO, IGNORE, lab).astype(np.uint8)) >= 0).all()
