"""nightlab.data.manifest: parquet round trip, label decoding, per-sample checks."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures_data import expected_train_ids, make_dataset

from nightlab.config import selectors
from nightlab.data.adapters import scan
from nightlab.data.manifest import (
    COLUMNS,
    Manifest,
    check_sample,
    decode_label,
    read_manifest,
    validate_frame,
    write_manifest,
)
from nightlab.io import DataError, read_image
from nightlab.labels import train_ids_to_label_ids


def _row(**kw) -> dict:
    row = dict(split="train", domain="night", image="img/a.png", label="lab/a.png", instance=None,
               height=32, width=64, source="test", encoding="trainIds", md5="0" * 32)
    row.update(kw)
    return row


def _frame() -> pd.DataFrame:
    return pd.DataFrame([
        _row(image="img/a.png", label="lab/a.png", instance="inst/a.png", domain="day"),
        _row(image="img/b.png", label="lab/b.png", instance=None),
        _row(split="val", image="img/c.png", label="lab/c.png", encoding="labelIds"),
    ])


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


# ---------------------------------------------------------------- parquet round trip

def test_round_trip_with_root_metadata(tmp_path):
    df = _frame()
    out = tmp_path / "data" / "manifest.parquet"
    write_manifest(df, out, root="/some/data/root")
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.parquet"]  # no temp file left
    m = read_manifest(out)
    assert isinstance(m, Manifest)
    assert m.root == {"test": Path("/some/data/root")}  # one root per source
    assert list(m.df.columns) == COLUMNS
    assert len(m) == 3
    for col in ("split", "domain", "image", "label", "source", "encoding"):
        assert m.df[col].tolist() == df[col].tolist()
    assert m.df.height.tolist() == [32] * 3 and m.df.width.tolist() == [64] * 3
    assert m.df.instance.iat[0] == "inst/a.png"
    assert pd.isna(m.df.instance.iat[1]) and pd.isna(m.df.instance.iat[2])
    assert m.file(0, "image") == Path("/some/data/root/img/a.png")
    # an explicit root wins over the stored one
    assert read_manifest(out, root=tmp_path).root == tmp_path


def test_round_trip_all_instances_missing(tmp_path):
    df = pd.DataFrame([_row(), _row(split="val", image="img/v.png")])
    write_manifest(df, tmp_path / "m.parquet", root=tmp_path)
    m = read_manifest(tmp_path / "m.parquet")
    assert m.df.instance.isna().all()


def test_select():
    m = Manifest(validate_frame(_frame(), "t"), Path("/r"))
    assert len(m.select(selectors("*/train/*"))) == 2
    assert m.select(selectors("*/train/*"), domains="night").df.image.tolist() == ["img/b.png"]
    assert m.select(selectors("*/train/night")).df.image.tolist() == ["img/b.png"]
    assert len(m.select(domains=["day", "night"])) == 3
    assert len(m.select(domains="all")) == 3
    assert len(m.select(selectors("*/test/*"))) == 0
    assert len(m.select(selectors("other/*/*"))) == 0  # another source
    assert len(m.select(selectors("*/train/*", "*/val/*"))) == 3  # any of several selectors
    assert m.select(selectors("*/val/*")).df.index.tolist() == [0]  # re-indexed


def test_read_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="nope.parquet.*not found"):
        read_manifest(tmp_path / "nope.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all" * 10)
    with pytest.raises(DataError, match="junk.parquet"):
        read_manifest(junk)
    plain = tmp_path / "plain.parquet"
    _frame().to_parquet(plain, index=False)  # no nightlab.roots metadata
    with pytest.raises(DataError, match="plain.parquet.*root"):
        read_manifest(plain)
    assert read_manifest(plain, root=tmp_path).root == tmp_path
    partial = tmp_path / "partial.parquet"
    _frame().drop(columns=["encoding"]).to_parquet(partial, index=False)
    with pytest.raises(DataError, match=r"partial.parquet.*\['encoding'\]"):
        read_manifest(partial, root=tmp_path)


def test_write_manifest_refuses_bad_frame(tmp_path):
    out = tmp_path / "m.parquet"
    with pytest.raises(DataError, match="dusk"):
        write_manifest(pd.DataFrame([_row(domain="dusk")]), out, root=tmp_path)
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- validate_frame

def test_validate_frame_refuses_an_image_listed_twice():
    with pytest.raises(DataError, match="listed twice.*img/a.png"):
        validate_frame(pd.DataFrame([_row(), _row(split="val")]), "src")


def test_validate_frame():
    df = _frame()[list(reversed(COLUMNS))].assign(extra=1)
    out = validate_frame(df, "src", splits=["train", "val"])
    assert list(out.columns) == COLUMNS  # reordered, extra dropped
    with pytest.raises(DataError, match=r"src: split 'test' is empty"):
        validate_frame(df, "src", splits=["train", "test"])
    with pytest.raises(DataError, match=r"src: split 'val' is empty"):
        validate_frame(_frame().iloc[:2], "src", splits=("train", "val"))
    with pytest.raises(DataError, match=r"src: manifest lacks columns \['height', 'width'\]"):
        validate_frame(df.drop(columns=["height", "width"]), "src")
    with pytest.raises(DataError, match="unknown domains"):
        validate_frame(pd.DataFrame([_row(domain="Night")]), "src")


# ---------------------------------------------------------------- decode_label

def test_decode_label_ids(tmp_path):
    train = np.array([[0, 1, 2, 255], [11, 12, 13, 18]], np.uint8)
    ids = train_ids_to_label_ids(train)
    ids[0, 3] = 1  # ego vehicle -> ignore
    f = _write(tmp_path / "x_labelIds.png", ids)
    out = decode_label(f, "labelIds")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, train)


def test_decode_train_ids(tmp_path):
    train = np.array([[0, 18, 255], [5, 6, 7]], np.uint8)
    out = decode_label(_write(tmp_path / "t.png", train), "trainIds")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, train)


@pytest.mark.parametrize("encoding, bad", [("labelIds", 200), ("labelIds", 34), ("trainIds", 40), ("trainIds", 19)])
def test_decode_label_out_of_range(tmp_path, encoding, bad):
    lab = np.full((4, 4), 7 if encoding == "labelIds" else 0, np.uint8)
    lab[1, 1] = bad
    f = _write(tmp_path / "bad.png", lab)
    with pytest.raises(DataError) as exc:
        decode_label(f, encoding)
    msg = str(exc.value)
    assert str(f) in msg and str(bad) in msg and encoding in msg


def test_decode_label_16bit_refused(tmp_path):
    f = _write(tmp_path / "wide.png", np.full((4, 4), 7, np.uint16))
    with pytest.raises(DataError) as exc:
        decode_label(f, "labelIds")
    assert str(f) in str(exc.value) and "8-bit" in str(exc.value)


def test_decode_label_unknown_encoding_and_missing(tmp_path):
    f = _write(tmp_path / "l.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="l.png.*'colour'"):
        decode_label(f, "colour")
    with pytest.raises(DataError, match="missing.png"):
        decode_label(tmp_path / "missing.png", "trainIds")


# ---------------------------------------------------------------- check_sample

def _sample(tmp_path, lab_shape=(32, 64), inst_shape=(32, 64), inst=True) -> dict:
    _write(tmp_path / "img" / "a.png", np.zeros((32, 64, 3), np.uint8))
    _write(tmp_path / "lab" / "a.png", np.zeros(lab_shape, np.uint8))
    if inst:
        _write(tmp_path / "inst" / "a.png", np.full(inst_shape, 26000, np.uint16))
    return _row(instance="inst/a.png" if inst else None)


def _hw(checked) -> tuple[int, int]:
    return checked.height, checked.width


def test_check_sample_ok(tmp_path):
    assert _hw(check_sample(tmp_path, _sample(tmp_path))) == (32, 64)
    row = pd.Series(_sample(tmp_path, inst=False) | {"instance": np.nan})  # a missing instance read from parquet
    assert _hw(check_sample(tmp_path, row)) == (32, 64)
    assert _hw(check_sample(tmp_path, pd.Series(_row() | {"instance": pd.NA}))) == (32, 64)


def test_check_sample_md5_follows_file_contents(tmp_path):
    row = _sample(tmp_path)
    before = check_sample(tmp_path, row).md5
    assert check_sample(tmp_path, row).md5 == before
    _write(tmp_path / "lab" / "a.png", np.ones((32, 64), np.uint8))  # same path, new label content
    assert check_sample(tmp_path, row).md5 != before


@pytest.mark.parametrize("suffix, keep", [(".jpg", 0.6), (".png", 0.6)])
def test_truncated_image_is_refused(tmp_path, suffix, keep):
    """OpenCV decodes a cut JPEG with a warning (the rest comes out grey): the check refuses it."""
    img = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    full = _write(tmp_path / f"full{suffix}", img)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError) as exc:
        read_image(cut)
    assert str(cut) in str(exc.value) and "truncated" in str(exc.value)
    assert read_image(full).shape == (128, 128, 3)


def test_check_sample_label_size_mismatch(tmp_path):
    row = _sample(tmp_path, lab_shape=(32, 60))
    with pytest.raises(DataError) as exc:
        check_sample(tmp_path, row)
    msg = str(exc.value)
    assert str(tmp_path / "lab" / "a.png") in msg
    assert "60x32" in msg and "64x32" in msg


def test_check_sample_instance_size_mismatch(tmp_path):
    row = _sample(tmp_path, inst_shape=(16, 64))
    with pytest.raises(DataError, match="inst/a.png: instance size"):
        check_sample(tmp_path, row)


def test_check_sample_bad_label_values_and_missing_files(tmp_path):
    row = _sample(tmp_path)
    _write(tmp_path / "lab" / "a.png", np.full((32, 64), 99, np.uint8))
    with pytest.raises(DataError, match="lab/a.png"):
        check_sample(tmp_path, row)
    with pytest.raises(DataError, match="img/zz.png"):
        check_sample(tmp_path, row | {"image": "img/zz.png"})
    with pytest.raises(DataError, match="inst/zz.png"):
        check_sample(tmp_path, _sample(tmp_path) | {"instance": "inst/zz.png"})


# ---------------------------------------------------------------- manifest reads a scanned dataset

def test_manifest_reads_scanned_dataset(tmp_path):
    root = make_dataset("cityscapes", tmp_path / "cs", splits=("train", "val"), n=2)
    df = scan("cityscapes", root, ["train", "val"])
    df["height"], df["width"] = 32, 64
    write_manifest(df, tmp_path / "manifest.parquet", root=root)
    m = read_manifest(tmp_path / "manifest.parquet")
    val = m.select(selectors("*/val/*"))
    assert len(val) == 2
    for i in range(2):
        assert val.image(i).shape == (32, 64, 3)
        np.testing.assert_array_equal(val.label(i), expected_train_ids("cityscapes", "val", i))
        inst = val.instance(i)
        assert inst.dtype == np.int32 and inst.shape == (32, 64)
        assert _hw(check_sample(root, val.df.iloc[i])) == (32, 64)


def test_empty_files_are_bad_files_reported_with_the_others(tmp_path):
    """A zero-byte image or mask (an interrupted copy) is named with the other bad files, never a crash."""
    from nightlab.data.prepare import inspect_samples

    rows = []
    for name in "abc":
        _write(tmp_path / "img" / f"{name}.png", np.zeros((32, 64, 3), np.uint8))
        _write(tmp_path / "lab" / f"{name}.png", np.zeros((32, 64), np.uint8))
        rows.append(_row(image=f"img/{name}.png", label=f"lab/{name}.png"))
    (tmp_path / "img" / "a.png").write_bytes(b"")
    (tmp_path / "lab" / "b.png").write_bytes(b"")
    _write(tmp_path / "lab" / "c.png", np.full((32, 64), 99, np.uint8))
    with pytest.raises(DataError) as exc:
        inspect_samples(tmp_path, pd.DataFrame(rows))
    msg = str(exc.value)
    assert "3 bad file(s)" in msg
    assert f"{tmp_path / 'img' / 'a.png'}: empty file" in msg and f"{tmp_path / 'lab' / 'b.png'}: empty file" in msg
    assert str(tmp_path / "lab" / "c.png") in msg


def test_a_split_whose_masks_are_all_ignore_is_refused_by_name(tmp_path):
    """Its IoUs would be NaN and no class could be hard: refused where the split is known."""
    from nightlab.data.prepare import inspect_samples

    rows = []
    for split, value in (("train", 3), ("val", 255), ("val", 255)):
        name = f"{split}_{len(rows)}"
        _write(tmp_path / "img" / f"{name}.png", np.zeros((32, 64, 3), np.uint8))
        _write(tmp_path / "lab" / f"{name}.png", np.full((32, 64), value, np.uint8))
        rows.append(_row(split=split, image=f"img/{name}.png", label=f"lab/{name}.png", source="mine"))
    with pytest.raises(DataError) as exc:
        inspect_samples(tmp_path, pd.DataFrame(rows))
    assert "every label pixel is ignore (255) in split(s) mine/val/night (2 masks)" in str(exc.value)
    assert "train" not in str(exc.value).split(":")[0]
    df, counts = inspect_samples(tmp_path, pd.DataFrame(rows[:1]))
    assert counts[0, 3] == 32 * 64


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_an_image_with_an_exif_orientation_is_refused_by_name(tmp_path, suffix):
    """OpenCV would rotate the image by its EXIF tag and not its mask: pixels are read as stored, and a
    tag that says to rotate is refused (which view the mask was drawn on cannot be told)."""
    from PIL import Image

    row = _sample(tmp_path) | {"image": f"img/a{suffix}"}
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / row["image"], exif=exif.tobytes())
    assert read_image(tmp_path / row["image"]).shape == (32, 64, 3)  # as stored, like its mask
    with pytest.raises(DataError) as exc:
        check_sample(tmp_path, row)
    assert str(exc.value).startswith(f"{tmp_path / row['image']}: EXIF orientation 6 (rotated 90° clockwise) is not "
                                     "supported")
    exif[0x0112] = 1  # upright: fine
    Image.fromarray(pixels).save(tmp_path / row["image"], exif=exif.tobytes())
    assert _hw(check_sample(tmp_path, row)) == (32, 64)
