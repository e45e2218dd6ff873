"""nightlab.boxes: hard-region boxes from labels, scaling, matching and proposal recall."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightlab.boxes import (
    BOX_COLUMNS,
    boxes_for,
    boxes_from_labels,
    expand_boxes,
    match_to_gt,
    recall_at_k,
    scale_boxes,
)
from nightlab.config import selectors
from nightlab.data.manifest import Manifest
from nightlab.labels import CLASS_IDS, CLASS_NAMES, IGNORE, LABEL_IDS

POLE, PERSON, CAR = CLASS_IDS["pole"], CLASS_IDS["person"], CLASS_IDS["car"]


def _tight(df: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, df[["bx0", "by0", "bx1", "by1"]].to_numpy().tolist()))


def _blank(h=40, w=60) -> np.ndarray:
    return np.full((h, w), IGNORE, np.uint8)


# ---------------------------------------------------------------- boxes_from_labels

def test_one_box_per_connected_component_of_a_stuff_class():
    lab = _blank()
    lab[10:20, 20:24] = POLE
    lab[25:35, 40:43] = POLE  # a second, separate pole
    df = boxes_from_labels(lab, None, min_area=1, context=0.0, min_size=1)
    assert list(df.columns) == BOX_COLUMNS
    assert (df.class_id == POLE).all() and (df.class_name == "pole").all()
    assert _tight(df) == [(20, 10, 24, 20), (40, 25, 43, 35)]  # x1/y1 exclusive
    assert sorted(df.area.tolist()) == [30, 40]
    assert (df.instance == -1).all()


def test_min_area_drops_tiny_components():
    lab = _blank()
    lab[10:20, 20:24] = POLE  # 40 px
    lab[30:32, 50:52] = POLE  # 4 px
    df = boxes_from_labels(lab, None, min_area=12, context=0.0, min_size=1)
    assert _tight(df) == [(20, 10, 24, 20)]
    assert len(boxes_from_labels(lab, None, min_area=4, context=0.0, min_size=1)) == 2
    assert len(boxes_from_labels(lab, None, min_area=41, context=0.0, min_size=1)) == 0


def test_no_boxes_gives_an_empty_frame_with_the_columns():
    df = boxes_from_labels(_blank(), None)
    assert len(df) == 0 and list(df.columns) == BOX_COLUMNS


def test_context_expansion_min_size_and_clipping_exact():
    lab = _blank(40, 60)
    lab[10:20, 20:24] = POLE  # tight (20, 10, 24, 20): 4 wide, 10 high, centre (22, 15)
    lab[0:4, 0:5] = CAR       # tight (0, 0, 5, 4) at the corner: its context box must be clipped
    df = boxes_from_labels(lab, None, min_area=1, context=0.5, min_size=12).sort_values("class_id")
    pole = df[df.class_id == POLE].iloc[0]
    car = df[df.class_id == CAR].iloc[0]
    # half-size = size * (0.5 + context) = (4, 10), then at least min_size / 2 = 6 -> (6, 10)
    assert [pole.x0, pole.y0, pole.x1, pole.y1] == pytest.approx([16, 5, 28, 25])
    # car: half (5, 4) -> (6, 6) around (2.5, 2): (-3.5, -4, 8.5, 8), clipped to the image
    assert [car.x0, car.y0, car.x1, car.y1] == pytest.approx([0, 0, 8.5, 8])
    # the tight box is kept beside the context box
    assert [pole.bx0, pole.by0, pole.bx1, pole.by1] == [20, 10, 24, 20]
    # context only (no min_size): half = 4 * 1.0, 10 * 1.0
    df2 = boxes_from_labels(lab, None, min_area=1, context=0.5, min_size=1)
    p2 = df2[df2.class_id == POLE].iloc[0]
    assert [p2.x0, p2.y0, p2.x1, p2.y1] == pytest.approx([18, 5, 26, 25])
    # clipping at the far border too
    lab3 = _blank(40, 60)
    lab3[36:40, 56:60] = POLE
    p3 = boxes_from_labels(lab3, None, min_area=1, context=1.0, min_size=1).iloc[0]
    assert [p3.x0, p3.y0, p3.x1, p3.y1] == pytest.approx([52, 32, 60, 40])


def test_expand_boxes_matches_the_rule():
    out = expand_boxes(np.array([[20, 10, 24, 20]]), context=0.25, min_size=0, h=100, w=100)
    # half = size * 0.75 = (3, 7.5) around (22, 15)
    np.testing.assert_allclose(out, [[19, 7.5, 25, 22.5]])
    assert expand_boxes(np.zeros((0, 4)), 0.5, 24, 10, 10).shape == (0, 4)


def test_one_box_per_instance_even_when_instances_touch():
    lab = _blank()
    inst = np.full(lab.shape, LABEL_IDS["ego vehicle"], np.int32)
    lab[10:30, 10:15] = PERSON
    lab[10:30, 15:20] = PERSON  # touches the first person
    inst[10:30, 10:15] = LABEL_IDS["person"] * 1000 + 0
    inst[10:30, 15:20] = LABEL_IDS["person"] * 1000 + 1
    lab[5:15, 40:45] = POLE  # stuff: instance map holds the labelId
    inst[5:15, 40:45] = LABEL_IDS["pole"]
    df = boxes_from_labels(lab, inst, min_area=1, context=0.0, min_size=1)
    persons = df[df.class_id == PERSON].sort_values("instance")
    assert persons.instance.tolist() == [24000, 24001]
    assert _tight(persons) == [(10, 10, 15, 30), (15, 10, 20, 30)]
    assert _tight(df[df.class_id == POLE]) == [(40, 5, 45, 15)]
    assert (df[df.class_id == POLE].instance == -1).all()
    # without instance ids the two touching persons are one component
    merged = boxes_from_labels(lab, None, min_area=1, context=0.0, min_size=1)
    assert _tight(merged[merged.class_id == PERSON]) == [(10, 10, 20, 30)]


def test_instance_class_pixels_without_an_instance_id_fall_back_to_components():
    lab = _blank()
    inst = np.full(lab.shape, LABEL_IDS["ego vehicle"], np.int32)
    lab[10:20, 10:20] = CAR
    inst[10:20, 10:20] = LABEL_IDS["car"] * 1000 + 3
    lab[25:35, 40:50] = CAR  # a crowd / group region: instance map holds just the labelId
    inst[25:35, 40:50] = LABEL_IDS["car"]
    df = boxes_from_labels(lab, inst, min_area=1, context=0.0, min_size=1)
    cars = df[df.class_id == CAR].sort_values("instance")
    assert cars.instance.tolist() == [-1, 26003]
    assert _tight(cars) == [(10, 10, 20, 20), (40, 25, 50, 35)]


def test_class_column_covers_all_classes():
    lab = _blank()
    lab[0:10, 0:10] = CLASS_IDS["road"]
    lab[0:10, 20:30] = CLASS_IDS["terrain"]
    lab[20:30, 20:23] = POLE
    df = boxes_from_labels(lab, None, min_area=1)
    assert set(df.class_id) == {CLASS_IDS["road"], CLASS_IDS["terrain"], POLE}
    assert all(CLASS_NAMES[c] == n for c, n in zip(df.class_id, df.class_name))
    assert df.class_id.dtype == np.int16


# ---------------------------------------------------------------- scaling

def test_scale_boxes_round_trip_native_scaled_native():
    native = np.array([[100.0, 50.0, 301.0, 151.0], [0, 0, 2048, 1024], [13.3, 7.7, 19.1, 40.9]])
    for scale in (0.5, 0.25, 0.37):
        scaled = scale_boxes(native, scale)
        np.testing.assert_allclose(scaled, native * scale)
        np.testing.assert_allclose(scale_boxes(scaled, 1 / scale), native, rtol=0, atol=1e-9)
    # integer input is not truncated
    np.testing.assert_allclose(scale_boxes([[1, 1, 3, 3]], 0.5), [[0.5, 0.5, 1.5, 1.5]])
    # a full-frame box maps to the full scaled frame
    np.testing.assert_allclose(scale_boxes([[0, 0, 2048, 1024]], 0.5), [[0, 0, 1024, 512]])


# ---------------------------------------------------------------- matching and recall

def test_match_to_gt():
    props = [[0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60]]
    best, pos = match_to_gt(props, [[0, 0, 10, 10], [100, 100, 110, 110]], 0.5)
    np.testing.assert_allclose(best, [1.0, 0.5, 0.0])
    assert pos.tolist() == [True, True, False]
    best, pos = match_to_gt(props, np.zeros((0, 4)), 0.5)
    assert best.tolist() == [0, 0, 0] and not pos.any()
    best, pos = match_to_gt(np.zeros((0, 4)), [[0, 0, 1, 1]], 0.5)
    assert len(best) == 0 and len(pos) == 0


def test_recall_at_k_on_hand_made_proposals():
    gts1 = [[0, 0, 10, 10], [20, 20, 30, 30]]
    props1 = [[100, 100, 110, 110],  # miss
              [0, 0, 10, 10],  # hits gt A
              [21, 21, 30, 30],  # hits gt B (IoU 0.81)
              [0, 0, 10, 10]]  # hits A again: no double counting
    gts2 = [[5, 5, 15, 15]]
    props2 = np.zeros((0, 4))
    r = recall_at_k([props1, props2], [gts1, gts2], ks=(1, 2, 3, 4))
    assert r == pytest.approx({1: 0.0, 2: 1 / 3, 3: 2 / 3, 4: 2 / 3})
    # threshold matters: B is hit at IoU 0.81 < 0.9
    assert recall_at_k([props1], [gts1], ks=(3,), iou_thresh=0.9)[3] == pytest.approx(0.5)
    assert np.isnan(recall_at_k([props1], [np.zeros((0, 4))], ks=(3,))[3])


# ---------------------------------------------------------------- subsets

def test_boxes_for_remaps_samples_to_a_subset():
    df = pd.DataFrame(dict(split=["train", "val", "train", "val"], domain=["day", "night", "night", "night"],
                           image=list("abcd"), label=list("abcd"), source="synthetic"))
    m = Manifest(df, Path("/root"))
    boxes = pd.DataFrame(dict(sample=[0, 1, 1, 2, 3, 3], class_id=[POLE, POLE, CAR, POLE, CAR, POLE],
                              x0=[0, 1, 2, 3, 4, 5], y0=0, x1=10, y1=10))
    val = m.select(selectors("*/val/*"))
    assert val.df.row.tolist() == [1, 3]
    out = boxes_for(boxes, val)
    assert out["sample"].tolist() == [0, 0, 1, 1]
    assert out.x0.tolist() == [1, 2, 4, 5]
    poles = boxes_for(boxes, val, class_ids=[POLE])
    assert poles["sample"].tolist() == [0, 1] and poles.x0.tolist() == [1, 5]
    # a nested selection keeps the position in the *full* manifest
    night_val = m.select(selectors("*/val/*")).select(domains="night")
    assert boxes_for(boxes, night_val)["sample"].tolist() == [0, 0, 1, 1]
    train_night = m.select(selectors("*/train/*"), "night")
    assert train_night.df.row.tolist() == [2]
    assert boxes_for(boxes, train_night)[["sample", "x0"]].values.tolist() == [[0, 3]]
