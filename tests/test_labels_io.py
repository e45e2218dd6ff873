"""nightlab.labels (the cityscapesscripts table) and nightlab.io (errors name files; atomic writes)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from cityscapesscripts.helpers.labels import id2label, trainId2label
from cityscapesscripts.helpers.labels import labels as cs_labels

from nightlab import labels as L
from nightlab.io import (
    DataError,
    atomic_path,
    read_image,
    read_json,
    read_label,
    read_table,
    write_image,
    write_json,
    write_label,
    write_table,
)

# ---------------------------------------------------------------- labels

def test_label_table_matches_cityscapesscripts():
    for lab_id in range(34):
        cs = id2label[lab_id].trainId
        want = cs if 0 <= cs < 255 else 255
        assert L.ID_TO_TRAINID[lab_id] == want, id2label[lab_id].name
    assert L.ID_TO_TRAINID.dtype == np.uint8
    assert (L.ID_TO_TRAINID[34:] == 255).all()  # values outside the table are ignore


@pytest.mark.parametrize("label_id, train_id", [(7, 0), (8, 1), (11, 2), (17, 5), (24, 11), (26, 13), (31, 16),
                                                (33, 18), (0, 255), (1, 255), (4, 255), (6, 255), (29, 255)])
def test_known_label_ids(label_id, train_id):
    assert L.label_ids_to_train_ids(np.array([label_id], np.uint8))[0] == train_id


def test_class_names_and_ids():
    assert L.NUM_CLASSES == 19
    assert tuple(trainId2label[t].name for t in range(19)) == L.CLASS_NAMES
    assert L.CLASS_NAMES[0] == "road" and L.CLASS_NAMES[18] == "bicycle"
    assert L.class_ids(["pole", "traffic light", "bicycle"]) == [5, 6, 18]
    with pytest.raises(ValueError, match="polee"):
        L.class_ids(["polee"])
    assert L.LABEL_IDS["road"] == 7 and L.LABEL_IDS["ego vehicle"] == 1
    assert {"person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"} == L.INSTANCE_CLASSES
    assert frozenset(range(34)) == L.VALID_LABEL_IDS


def test_train_label_train_round_trip():
    t = np.arange(19, dtype=np.uint8).reshape(1, 19)
    ids = L.train_ids_to_label_ids(t)
    assert ids.dtype == np.uint8
    assert [id2label[int(i)].trainId for i in ids[0]] == list(range(19))
    back = L.label_ids_to_train_ids(ids)
    assert back.dtype == np.uint8 and back.shape == t.shape
    np.testing.assert_array_equal(back, t)
    # ignore survives the round trip (as labelId 0, 'unlabeled')
    assert L.train_ids_to_label_ids(np.array([255], np.uint8))[0] == 0
    assert L.label_ids_to_train_ids(L.train_ids_to_label_ids(np.array([255], np.uint8)))[0] == 255


def test_colorize_shape_and_colours():
    t = np.array([[0, 1, 18], [13, 255, 10]], np.uint8)
    rgb = L.colorize(t)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    for (y, x), tid in np.ndenumerate(t):
        want = (0, 0, 0) if tid == 255 else trainId2label[int(tid)].color
        assert tuple(rgb[y, x]) == tuple(want)
    assert tuple(rgb[0, 0]) == (128, 64, 128)  # road purple


def test_license_plate_not_in_table():
    plate = [lab for lab in cs_labels if lab.id == -1]
    assert plate and all(lab.name not in L.CLASS_NAMES for lab in plate)


# ---------------------------------------------------------------- atomic_path

def _leftovers(d):
    return sorted(p.name for p in d.iterdir())


def test_atomic_path_success_renames(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("done")
        assert not target.exists()  # nothing visible until the body finishes
    assert target.read_text() == "done"
    assert _leftovers(target.parent) == ["out.txt"]


def test_atomic_path_raise_leaves_nothing(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half written")
        raise RuntimeError("boom")
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_path_raise_keeps_previous_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == ["out.json"]


def test_atomic_path_dir(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(ValueError), atomic_path(target, is_dir=True) as tmp:
        assert tmp.is_dir()
        (tmp / "weights.pt").write_bytes(b"x")
        raise ValueError("killed")
    assert _leftovers(tmp_path) == []
    target.mkdir()
    (target / "stale.txt").write_text("stale")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "weights.pt").write_bytes(b"x")
    assert _leftovers(target) == ["weights.pt"]  # replaced as a whole
    assert _leftovers(tmp_path) == ["model"]


# ---------------------------------------------------------------- json / tables

def test_json_round_trip_and_errors(tmp_path):
    f = tmp_path / "m.json"
    write_json(f, {"image.mIoU": 0.5, "a": [1, 2]})
    assert read_json(f) == {"image.mIoU": 0.5, "a": [1, 2]}
    assert json.loads(f.read_text())["a"] == [1, 2]
    with pytest.raises(DataError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        read_json(bad)


def test_table_round_trip_and_errors(tmp_path):
    df = pd.DataFrame({"cls": ["pole", "sky"], "iou": [0.25, 0.9]})
    write_table(df, parquet=tmp_path / "t.parquet", csv=tmp_path / "t.csv")
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.parquet"), df, check_dtype=False)
    assert pd.read_csv(tmp_path / "t.csv")["iou"].tolist() == [0.25, 0.9]
    with pytest.raises(DataError, match=r"missing columns \['x'\]"):
        read_table(tmp_path / "t.parquet", columns=["cls", "x"])
    with pytest.raises(DataError, match="nope.parquet"):
        read_table(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"garbage" * 20)
    with pytest.raises(DataError, match="junk.parquet"):
        read_table(tmp_path / "junk.parquet")


# ---------------------------------------------------------------- images / labels

def test_read_image_is_rgb(tmp_path):
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    rgb = read_image(tmp_path / "blue.png")
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 2] == 255).all() and (rgb[..., :2] == 0).all()
    # write_image takes RGB and round-trips
    write_image(tmp_path / "again.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "again.png"), rgb)


@pytest.mark.parametrize("reader", [read_image, read_label])
def test_readers_missing_and_corrupt(tmp_path, reader):
    missing = tmp_path / "missing.png"
    with pytest.raises(DataError) as exc:
        reader(missing)
    assert str(missing) in str(exc.value) and "not found" in str(exc.value)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really" + bytes(range(256)))
    with pytest.raises(DataError) as exc:
        reader(corrupt)
    assert str(corrupt) in str(exc.value) and "decode" in str(exc.value)
    directory = tmp_path / "dir.png"
    directory.mkdir()
    with pytest.raises(DataError, match="dir.png"):
        reader(directory)


def test_read_label_uint8_and_grey_rgb(tmp_path):
    lab = np.arange(24, dtype=np.uint8).reshape(4, 6)
    write_label(tmp_path / "l.png", lab)
    out = read_label(tmp_path / "l.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, lab)
    cv2.imwrite(str(tmp_path / "grey3.png"), np.dstack([lab] * 3))  # some tools save grey labels as RGB
    np.testing.assert_array_equal(read_label(tmp_path / "grey3.png"), lab)
    colour = np.dstack([lab, lab, lab + 1])
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    with pytest.raises(DataError, match="colour.png.*channels"):
        read_label(tmp_path / "colour.png")


def test_read_label_16bit(tmp_path):
    inst = np.array([[26000, 26001], [7, 24000]], np.uint16)
    write_label(tmp_path / "inst.png", inst)
    raw = read_label(tmp_path / "inst.png", dtype=None)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, inst)
    np.testing.assert_array_equal(read_label(tmp_path / "inst.png", dtype=np.int32), inst.astype(np.int32))
    # Narrowing to uint8 would wrap 26000 -> 144: refused, not silently corrupted.
    with pytest.raises(DataError, match="inst.png"):
        read_label(tmp_path / "inst.png")
    small = np.array([[3, 255]], np.uint16)  # a 16-bit file whose values fit is fine
    write_label(tmp_path / "small.png", small)
    np.testing.assert_array_equal(read_label(tmp_path / "small.png"), small.astype(np.uint8))


@pytest.mark.parametrize("bits", [8, 4])
def test_a_palette_label_png_reads_as_its_indices(tmp_path, bits):
    """Many tools save masks in palette mode (index = class id, colours for viewing): the ids are the indices."""
    from PIL import Image

    from nightlab.data.manifest import decode_label

    lab = (np.arange(48, dtype=np.uint8).reshape(6, 8) % (16 if bits == 4 else 19))
    if bits == 8:
        lab[0, 0] = 255
    im = Image.fromarray(lab, mode="P")
    im.putpalette(np.random.default_rng(0).integers(0, 255, 3 * 2**bits).astype(np.uint8).tolist())
    im.save(tmp_path / "p.png", bits=bits)
    assert cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED).ndim == 3  # OpenCV expands the colours
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), lab)
    np.testing.assert_array_equal(decode_label(tmp_path / "p.png", "trainIds"), lab)


def _with_sbit(png: bytes, bits: int, channels: int = 3) -> bytes:
    """The PNG with an sBIT chunk (significant bits per channel) right after IHDR (33 bytes in)."""
    import zlib

    data = bytes([bits] * channels)
    chunk = len(data).to_bytes(4, "big") + b"sBIT" + data + zlib.crc32(b"sBIT" + data).to_bytes(4, "big")
    return png[:33] + chunk + png[33:]


@pytest.mark.parametrize("bits, sbit", [(16, None), (12, None), (10, 10), (12, 16)])
def test_a_16_bit_image_is_scaled_by_its_real_range(tmp_path, bits, sbit):
    """12-bit data in a 16-bit PNG must not come out as its high byte (0..15): it is scaled by its own
    range, which an sBIT chunk states and a maximum below 4096 implies (no camera stores 16 bits that dark)."""
    real = sbit or bits
    values = np.linspace(0, 2**bits - 1, 4 * 6 * 3).round().astype(np.uint16).reshape(4, 6, 3)
    ok, buf = cv2.imencode(".png", values)
    png = buf.tobytes() if sbit is None else _with_sbit(buf.tobytes(), sbit)
    (tmp_path / "deep.png").write_bytes(png)
    rgb = read_image(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8
    expected = np.round(values[..., ::-1].astype(np.float64) * 255 / (2**real - 1)).astype(np.uint8)
    np.testing.assert_array_equal(rgb, expected)
    if real == bits:
        assert rgb.max() == 255
