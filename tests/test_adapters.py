"""nightlab.data.adapters: each dataset layout scans into the right manifest rows."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures_data import ENCODING, KINDS, expected_train_ids, make_dataset, sample_paths

from nightlab.data.adapters import ADAPTERS, scan, scan_cityscapes
from nightlab.data.manifest import check_sample, decode_label
from nightlab.io import DataError

# The real Cityscapes sample beside the project (read in place, never copied); skipped when absent.
SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cityscapes_sample"

DOMAIN = {"cityscapes": "day", "nightcity": "night", "acdc": "night", "darkzurich": "night", "bdd100k": "day",
          "folder": "night"}
# The folder holding a split's images, per layout.
SPLIT_DIR = {"cityscapes": "leftImg8bit/{split}", "nightcity": "images/{split}", "acdc": "rgb_anon/night/{split}",
             "darkzurich": "rgb_anon/{split}/night", "bdd100k": "images/10k/{split}", "folder": "images/{split}"}

# Sample 0 of 'val' in each dataset's own on-disk layout, spelled out (pins the layouts to the real datasets).
LITERAL_VAL0 = {
    "cityscapes": ("leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png",
                   "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png",
                   "gtFine/val/aachen/aachen_000000_000019_gtFine_instanceIds.png"),
    "nightcity": ("images/val/city_0000.png", "label/val/city_0000_labelIds.png", None),
    "acdc": ("rgb_anon/night/val/GOPR0351/GOPR0351_frame_000000_rgb_anon.png",
             "gt/night/val/GOPR0351/GOPR0351_frame_000000_gt_labelIds.png", None),
    "darkzurich": ("rgb_anon/val/night/GOPR0351/GOPR0351_frame_000000_rgb_anon.png",
                   "gt/val/night/GOPR0351/GOPR0351_frame_000000_gt_labelIds.png", None),
    "folder": ("images/val/img_000.png", "masks/val/img_000.png", None),
}


def _expected_rows(kind: str, splits, n: int) -> list[dict]:
    rows = []
    for split in splits:
        for i in range(n):
            p = sample_paths(kind, split, i)
            rows.append(dict(split=split, domain=DOMAIN[kind], image=p["image"], label=p["label"],
                             instance=p["instance"], height=-1, width=-1, source=kind, encoding=ENCODING[kind],
                             md5=None))
    return sorted(rows, key=lambda r: (r["split"], r["image"]))


def _records(df) -> list[dict]:
    recs = [{k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for k, v in r.items()}
            for r in df.to_dict("records")]
    return sorted(recs, key=lambda r: (r["split"], r["image"]))


def test_adapters_cover_every_kind():
    assert set(ADAPTERS) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_scan_rows(tmp_path, kind):
    root = make_dataset(kind, tmp_path / kind, splits=("train", "val"), n=3)
    df = scan(kind, root, ["train", "val"])
    assert _records(df) == _expected_rows(kind, ("train", "val"), 3)
    assert (df.split == "train").sum() == 3 and (df.split == "val").sum() == 3
    for rel in list(df.image) + list(df.label):
        assert not Path(rel).is_absolute() and (root / rel).is_file()


@pytest.mark.parametrize("kind", sorted(LITERAL_VAL0))
def test_scan_layout_literal(tmp_path, kind):
    root = make_dataset(kind, tmp_path / kind, splits=("val",), n=1)
    row = _records(scan(kind, root, ["val"]))[0]
    assert (row["image"], row["label"], row["instance"]) == LITERAL_VAL0[kind]


def test_scan_bdd100k_layout(tmp_path):
    root = make_dataset("bdd100k", tmp_path / "bdd", splits=("val",), n=1)
    row = _records(scan("bdd100k", root, ["val"]))[0]
    stem = Path(row["image"]).stem
    assert row["image"] == f"images/10k/val/{stem}.jpg"
    assert row["label"] == f"labels/sem_seg/masks/val/{stem}.png"
    assert row["encoding"] == "trainIds" and row["instance"] is None


@pytest.mark.parametrize("kind", KINDS)
def test_scanned_rows_decode_to_train_ids(tmp_path, kind):
    """The encoding column matches what is on disk: every label decodes to the trainIds written."""
    root = make_dataset(kind, tmp_path / kind, splits=("val",), n=2)
    df = scan(kind, root, ["val"])
    for _, row in df.iterrows():
        i = next(i for i in range(2) if sample_paths(kind, "val", i)["image"] == row.image)
        np.testing.assert_array_equal(decode_label(root / row.label, row.encoding), expected_train_ids(kind, "val", i))
        checked = check_sample(root, row)
        assert (checked.height, checked.width) == (32, 64)
        np.testing.assert_array_equal(checked.train_ids, expected_train_ids(kind, "val", i))


@pytest.mark.parametrize("kind", KINDS)
def test_missing_root(tmp_path, kind):
    missing = tmp_path / "no_such_dataset"
    with pytest.raises(DataError) as exc:
        scan(kind, missing, ["train"])
    assert str(missing) in str(exc.value)


@pytest.mark.parametrize("kind", KINDS)
def test_image_without_label(tmp_path, kind):
    root = make_dataset(kind, tmp_path / kind, splits=("train",), n=2)
    p = sample_paths(kind, "train", 1)
    (root / p["label"]).unlink()
    with pytest.raises(DataError) as exc:
        scan(kind, root, ["train"])
    msg = str(exc.value)
    assert str(root / p["image"]) in msg and "no label" in msg


@pytest.mark.parametrize("kind", KINDS)
def test_empty_split(tmp_path, kind):
    root = make_dataset(kind, tmp_path / kind, splits=("train",), n=1)
    val_dir = root / SPLIT_DIR[kind].format(split="val")
    val_dir.mkdir(parents=True)
    (val_dir / "README.txt").write_text("no images here")
    with pytest.raises(DataError) as exc:
        scan(kind, root, ["train", "val"])
    assert "split 'val'" in str(exc.value) and "is empty" in str(exc.value)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_split_dir(tmp_path, kind):
    root = make_dataset(kind, tmp_path / kind, splits=("train",), n=1)
    with pytest.raises(DataError) as exc:
        scan(kind, root, ["train", "val"])
    assert str(root / SPLIT_DIR[kind].format(split="val")) in str(exc.value)
    if kind != "darkzurich":  # rgb_anon/{split}/night: the split folder itself is missing
        assert "(found there: train)" in str(exc.value)


def test_unknown_kind(tmp_path):
    with pytest.raises(DataError) as exc:
        scan("kitti", tmp_path, ["train"])
    for kind in KINDS:
        assert kind in str(exc.value)


def test_domain_override(tmp_path):
    root = make_dataset("acdc", tmp_path / "acdc", splits=("val",), n=2)
    assert set(scan("acdc", root, ["val"], domain="day").domain) == {"day"}


def _write(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_cityscapes_day_night_cities_and_missing_instance(tmp_path):
    for city in ("day", "night"):
        _write(tmp_path / f"leftImg8bit/train/{city}/s_{city}_leftImg8bit.png", np.zeros((8, 16, 3), np.uint8))
        _write(tmp_path / f"gtFine/train/{city}/s_{city}_gtFine_labelIds.png", np.full((8, 16), 7, np.uint8))
    _write(tmp_path / "gtFine/train/night/s_night_gtFine_instanceIds.png", np.full((8, 16), 7, np.uint16))
    rows = {r["domain"]: r for r in scan("cityscapes", tmp_path, ["train"]).to_dict("records")}
    assert set(rows) == {"day", "night"}
    assert rows["night"]["image"] == "leftImg8bit/train/night/s_night_leftImg8bit.png"
    assert rows["night"]["instance"] == "gtFine/train/night/s_night_gtFine_instanceIds.png"
    assert pd.isna(rows["day"]["instance"])  # no instanceIds file: no instance path


def test_cityscapes_train_ids_encoding_pairs_label_train_ids(tmp_path):
    root = make_dataset("cityscapes", tmp_path / "cs", splits=("val",), n=2)
    df = scan("cityscapes", root, ["val"], encoding="trainIds")
    assert set(df.encoding) == {"trainIds"}
    assert all(lab.endswith("_gtFine_labelTrainIds.png") for lab in df.label)
    for _, row in df.iterrows():
        i = int(Path(row.image).name.split("_")[1])
        expected = expected_train_ids("cityscapes", "val", i)
        np.testing.assert_array_equal(decode_label(root / row.label, row.encoding), expected)


def test_folder_domains_nested_and_label_ids(tmp_path):
    lab = np.full((8, 16), 7, np.uint8)  # labelId road
    for sub in ("day", "night", "misc"):
        _write(tmp_path / f"images/train/{sub}/a.jpg", np.zeros((8, 16, 3), np.uint8))
        _write(tmp_path / f"masks/train/{sub}/a.png", lab)
    df = scan("folder", tmp_path, ["train"], encoding="labelIds")
    got = {r["image"]: (r["domain"], r["label"], r["encoding"]) for r in df.to_dict("records")}
    assert got == {
        "images/train/day/a.jpg": ("day", "masks/train/day/a.png", "labelIds"),
        "images/train/misc/a.jpg": ("night", "masks/train/misc/a.png", "labelIds"),
        "images/train/night/a.jpg": ("night", "masks/train/night/a.png", "labelIds"),
    }
    assert (decode_label(tmp_path / "masks/train/day/a.png", "labelIds") == 0).all()


def test_non_image_files_ignored(tmp_path):
    root = make_dataset("nightcity", tmp_path / "nc", splits=("train",), n=2)
    (root / "images/train/notes.txt").write_text("x")
    (root / "images/train/.cache").mkdir()
    assert len(scan("nightcity", root, ["train"])) == 2


@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="shared Cityscapes sample not present")
def test_real_cityscapes_sample(tmp_path):
    rows = scan_cityscapes(SHARED_SAMPLE, "val")
    assert len(rows) == 1
    row = rows[0]
    assert row["image"] == "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    assert row["label"] == "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    assert row["instance"] == "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_instanceIds.png"
    assert row["domain"] == "day" and row["encoding"] == "labelIds"
    checked = check_sample(SHARED_SAMPLE, row)
    assert (checked.height, checked.width) == (128, 256) and len(checked.md5) == 32
    ours = decode_label(SHARED_SAMPLE / row["label"], row["encoding"])
    ref_path = SHARED_SAMPLE / row["label"].replace("_labelIds.png", "_labelTrainIds.png")
    ref = cv2.imread(str(ref_path), cv2.IMREAD_UNCHANGED)
    assert ours.shape == ref.shape
    assert (ours == ref).mean() >= 0.995
    # the trainIds encoding reads the labelTrainIds file itself
    (tr,) = scan_cityscapes(SHARED_SAMPLE, "val", encoding="trainIds")
    np.testing.assert_array_equal(decode_label(SHARED_SAMPLE / tr["label"], "trainIds"), ref)


@pytest.mark.parametrize("kind", ["cityscapes", "acdc"])
def test_symlinked_city_or_sequence_folders_are_followed(tmp_path, kind):
    """A city (or sequence) linked in from elsewhere belongs to the dataset; a link loop is not followed twice."""
    root = make_dataset(kind, tmp_path / kind, splits=("train",), n=2)
    elsewhere = make_dataset(kind, tmp_path / "elsewhere", splits=("train",), n=2)
    split_dir = root / SPLIT_DIR[kind].format(split="train")
    other = elsewhere / SPLIT_DIR[kind].format(split="train")
    label_dir = {"cityscapes": "gtFine/train", "acdc": "gt/night/train"}[kind]
    for sub in other.iterdir():  # link the other dataset's folders in under new names
        (split_dir / f"{sub.name}_linked").symlink_to(sub, target_is_directory=True)
        (root / label_dir / f"{sub.name}_linked").symlink_to(elsewhere / label_dir / sub.name,
                                                            target_is_directory=True)
    (split_dir / "loop").symlink_to(split_dir, target_is_directory=True)
    df = scan(kind, root, ["train"])
    assert len(df) == 4, df.image.tolist()


def test_several_images_without_labels_are_all_reported(tmp_path):
    root = make_dataset("nightcity", tmp_path / "nc", splits=("train",), n=4)
    for i in (0, 2, 3):
        (root / sample_paths("nightcity", "train", i)["label"]).unlink()
    with pytest.raises(DataError) as exc:
        scan("nightcity", root, ["train"])
    msg = str(exc.value)
    assert msg.startswith("3 image(s) without a label")
    for i in (0, 2, 3):
        assert sample_paths("nightcity", "train", i)["image"] in msg
