"""nightlab.data.dataset: whole-image, region-crop and detection datasets; paired augmentation."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from nightlab.boxes import scale_boxes
from nightlab.data.dataset import (
    DetectionDataset,
    FrameCache,
    ImageDataset,
    RegionDataset,
    ViewAugment,
    detection_collate,
    nbytes,
)
from nightlab.data.manifest import Manifest
from nightlab.io import write_image, write_label
from nightlab.labels import CLASS_IDS, IGNORE
from nightlab.regions import CropRule, View, cut

ROAD, POLE, CAR = CLASS_IDS["road"], CLASS_IDS["pole"], CLASS_IDS["car"]
H, W = 32, 64
# The image's colour encodes the class: road red, car blue, pole green, ignore grey.
COLOUR = {ROAD: (255, 0, 0), CAR: (0, 0, 255), POLE: (0, 255, 0), IGNORE: (128, 128, 128)}


def _label() -> np.ndarray:
    """Asymmetric left/right: road on the left quarter, car elsewhere, a pole block, ignore at the bottom.

    All boundaries are on even coordinates, so a 0.5 area-downscale keeps every colour pure.
    """
    lab = np.full((H, W), CAR, np.uint8)
    lab[:, :16] = ROAD
    lab[8:16, 40:48] = POLE
    lab[-2:] = IGNORE
    return lab


def _image(lab: np.ndarray) -> np.ndarray:
    img = np.zeros((*lab.shape, 3), np.uint8)
    for c, rgb in COLOUR.items():
        img[lab == c] = rgb
    return img


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Manifest:
    root = tmp_path_factory.mktemp("ds")
    rows = []
    for i in range(2):
        lab = _label() if i == 0 else np.ascontiguousarray(_label()[::-1])  # the second one upside down
        write_image(root / f"img/{i}.png", _image(lab))
        write_label(root / f"lab/{i}.png", lab)
        rows.append(dict(split="train", domain="night", image=f"img/{i}.png", label=f"lab/{i}.png", instance=None,
                         height=H, width=W, source="test", encoding="trainIds"))
    return Manifest(pd.DataFrame(rows), root)


def _dominant(x: torch.Tensor) -> torch.Tensor:
    """Per pixel, which of (R, G, B) is largest (0/1/2), or -1 where they are (nearly) equal: grey."""
    out = x.argmax(0)
    spread = x.max(0).values - x.min(0).values
    return torch.where(spread < 0.05, -1, out)


def _consistent(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Every pixel's colour agrees with its class."""
    d = _dominant(x)
    want = {ROAD: 0, POLE: 1, CAR: 2, IGNORE: -1}
    return all(bool((d[y == c] == v).all()) for c, v in want.items())


# ---------------------------------------------------------------- ImageDataset

def test_image_dataset_scaled_shapes_and_content(manifest):
    ds = ImageDataset(manifest, scale=0.5, train=False)
    x, y = ds[0]
    assert x.shape == (3, H // 2, W // 2) and x.dtype == torch.float32
    assert y.shape == (H // 2, W // 2) and y.dtype == torch.long
    assert x.min() >= 0 and x.max() <= 1
    assert type(x) is torch.Tensor and type(y) is torch.Tensor  # no tv_tensors leak into the batches
    assert torch.equal(y, torch.from_numpy(_label()[::2, ::2]).long())
    assert _consistent(x, y)
    x1, y1 = ImageDataset(manifest, scale=1.0)[0]
    assert x1.shape == (3, H, W) and torch.equal(y1, torch.from_numpy(_label()).long())


def test_image_dataset_flips_image_and_mask_together(manifest):
    ds = ImageDataset(manifest, scale=0.5, train=True, hflip=True, seed=0)
    plain = torch.from_numpy(_label()[::2, ::2]).long()
    flipped = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        x, y = ds[0]
        assert x.shape == (3, H // 2, W // 2)
        if torch.equal(y, plain.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(y, plain)
        assert _consistent(x, y), epoch  # colour jitter keeps the dominant channel
    assert 0 < flipped < 12  # both outcomes occur


def test_image_dataset_random_crop_is_paired(manifest):
    ds = ImageDataset(manifest, scale=1.0, train=True, crop=(16, 24), seed=1)
    lab = torch.from_numpy(_label()).long()
    for epoch in range(4):
        ds.set_epoch(epoch)
        x, y = ds[1]
        assert x.shape == (3, 16, 24) and y.shape == (16, 24)
        assert _consistent(x, y)
        assert set(y.unique().tolist()) <= set(lab.unique().tolist())


def test_image_dataset_is_seeded_by_seed_epoch_index(manifest):
    a = ImageDataset(manifest, scale=0.5, train=True, seed=7)
    b = ImageDataset(manifest, scale=0.5, train=True, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    xa, ya = a[1]
    _ = b[0]  # other draws in between do not matter
    xb, yb = b[1]
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    torch.rand(10)  # nor does the global RNG
    assert torch.equal(a[1][0], xa)
    others = []
    for epoch in (4, 5, 6):
        a.set_epoch(epoch)
        others.append(a[1][0])
    assert any(not torch.equal(o, xa) for o in others)  # another epoch may draw differently
    c = ImageDataset(manifest, scale=0.5, train=True, seed=8)
    c.set_epoch(3)
    assert not torch.equal(c[1][0], xa)


# ---------------------------------------------------------------- RegionDataset

def _boxes(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["sample", "x0", "y0", "x1", "y1"])


def test_region_dataset_crops_are_square_and_match_the_labels(manifest):
    boxes = _boxes([(0, 40, 8, 48, 16),  # exactly the pole block
                    (0, 36, 8, 48, 16),  # 4 px of car then 8 px of pole: a 12 x 8 box
                    (1, 0, 0, 64, 32)])  # the whole (upside-down) second image
    ds = RegionDataset(manifest, boxes, CropRule(16, "square"), train=False)  # version 1's squashed crops
    assert len(ds) == 3
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and y.shape == (16, 16) and y.dtype == torch.long
    assert (y == POLE).all()
    assert torch.allclose(x, torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1))
    x, y = ds[1]
    assert set(y.unique().tolist()) == {CAR, POLE}
    assert (y[:, :5] == CAR).all() and (y[:, 6:] == POLE).all()  # 4/12 of the width is car
    assert ((y == POLE).float().mean() - 8 / 12).abs() <= 1 / 16
    inner = y.clone()
    inner[:, 4:7] = -1  # bilinear colours may blend at the boundary
    d = _dominant(x)
    assert (d[inner == CAR] == 2).all() and (d[inner == POLE] == 1).all()
    x, y = ds[2]
    lab1 = torch.from_numpy(np.ascontiguousarray(_label()[::-1])).long()
    assert torch.equal(y, lab1[::2, ::4]) and x.shape == (3, 16, 16)  # 32 x 64 squeezed to 16 x 16


def test_region_dataset_fractional_and_train_jitter(manifest):
    boxes = _boxes([(0, 39.6, 7.2, 48.4, 16.9), (0, 10, 0, 30, 20)])
    ds = RegionDataset(manifest, boxes, CropRule(24, "zoom", 4.0, 0.5), train=True, augment=ViewAugment(0.3), seed=0)
    lab_vals = set(np.unique(_label()).tolist())
    for epoch in range(5):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 24, 24) and y.shape == (24, 24)
            assert set(y.unique().tolist()) <= lab_vals
            assert x.min() >= 0 and x.max() <= 1
    ds.set_epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(ds[1], ds[1]))  # seeded


# ---------------------------------------------------------------- DetectionDataset

def test_detection_dataset_scales_and_flips_boxes_with_the_image(manifest):
    native = np.array([[40, 8, 48, 16], [0, 0, 16, 30]], np.float32)  # the pole block; the road strip
    boxes = pd.DataFrame(dict(sample=[0, 0], x0=native[:, 0], y0=native[:, 1], x1=native[:, 2], y1=native[:, 3]))
    scale = 0.5
    ds = DetectionDataset(manifest, boxes, scale=scale, train=False)
    img, tgt = ds[0]
    assert img.shape == (3, H // 2, W // 2)
    np.testing.assert_allclose(tgt["boxes"].numpy(), scale_boxes(native, scale))
    np.testing.assert_allclose(scale_boxes(tgt["boxes"].numpy(), 1 / scale), native)  # back to native
    assert type(tgt["boxes"]) is torch.Tensor
    # sample 1 has no boxes: an empty (0, 4) target
    assert ds[1][1]["boxes"].shape == (0, 4)

    def pole_colour(img, b):
        x0, y0, x1, y1 = (int(v) for v in b)
        return _dominant(img[:, y0:y1, x0:x1])

    train = DetectionDataset(manifest, boxes, scale=scale, train=True, seed=0)
    w = W * scale
    flips = 0
    for epoch in range(12):
        train.set_epoch(epoch)
        img, tgt = train[0]
        b = tgt["boxes"].numpy()
        s = scale_boxes(native, scale)
        if not np.allclose(b, s):
            flipped = s.copy()
            flipped[:, [0, 2]] = w - s[:, [2, 0]]
            np.testing.assert_allclose(b, flipped)
            flips += 1
        assert (pole_colour(img, b[0]) == 1).all()  # the box still sits on the green pole
        assert (pole_colour(img, b[1]) == 0).all()  # and on the red road
    assert 0 < flips < 12
    images, targets = detection_collate([train[0], train[1]])
    assert images.shape == (2, 3, H // 2, W // 2) and len(targets) == 2


# ---------------------------------------------------------------- the decoded-frame cache

@pytest.mark.parametrize("policy", ["first", "lru"])
def test_frame_cache_never_holds_more_than_its_bound(policy):
    frame = 1000  # bytes per frame
    cache = FrameCache(int(2.5 * frame), policy)  # room for two
    loads = []

    def load(k):
        loads.append(k)
        return np.full(frame, k % 256, np.uint8)

    rng = np.random.default_rng(0)
    for k in rng.integers(0, 6, 200).tolist():
        assert int(cache.get(k, lambda k=k: load(k))[0]) == k % 256
        assert cache.nbytes <= 2.5 * frame and len(cache) <= 2
        assert cache.nbytes == len(cache) * frame
    assert cache.hits + cache.misses == 200 and len(loads) == cache.misses
    cache.clear()
    for k in (0, 1, 0, 2):
        cache.get(k, lambda k=k: load(k))
    # first: the first two frames stay, 2 is decoded on demand; lru: 0 was used after 1, so 1 makes room for 2
    assert (0 in cache, 1 in cache, 2 in cache) == ((True, True, False) if policy == "first" else (True, False, True))
    # a frame larger than the whole bound is returned, never kept; a zero bound keeps nothing
    big = cache.get("big", lambda: np.zeros(3 * frame, np.uint8))
    assert big.nbytes == 3 * frame and "big" not in cache and cache.nbytes <= 2.5 * frame
    off = FrameCache(0, policy)
    assert off.get(1, lambda: load(1)) is not None and len(off) == 0 and off.nbytes == 0


def test_a_first_frames_cache_serves_its_share_of_shuffled_epochs():
    """Each epoch reads every frame once in a new order: keeping the first frames serves their share of
    every later epoch, where least-recently-used eviction serves far fewer (the reason for the policy)."""
    frames, room = 40, 10
    rates = {}
    for policy in ("first", "lru"):
        cache = FrameCache(room, policy)
        for epoch in range(21):
            if epoch == 1:
                cache.hits = 0
            for k in np.random.default_rng(epoch).permutation(frames).tolist():
                cache.get(k, lambda: np.zeros(1, np.uint8))
        rates[policy] = cache.hits / (20 * frames)
    assert rates["first"] == room / frames
    assert rates["lru"] < 0.5 * rates["first"], rates


def test_frame_cache_bound_is_shared_by_loader_workers(monkeypatch):
    import nightlab.data.dataset as dataset

    cache = FrameCache(1000)
    assert cache.limit == 1000
    monkeypatch.setattr(dataset, "get_worker_info", lambda: SimpleNamespace(num_workers=4))
    assert cache.limit == 250
    for k in range(10):
        cache.get(k, lambda: np.zeros(100, np.uint8))
        assert cache.nbytes <= 250


def _datasets(manifest, cache_mb):
    boxes = _boxes([(0, 40, 8, 48, 16), (1, 0, 0, 30, 20), (0, 10, 0, 30, 20), (1, 33.5, 2.2, 60.1, 30.8)])
    return [ImageDataset(manifest, 0.5, train=True, crop=(12, 20), seed=3, cache_mb=cache_mb),
            RegionDataset(manifest, boxes, CropRule(16, "zoom", 4.0, 0.5), train=True, augment=ViewAugment(0.2), seed=3,
                          cache_mb=cache_mb),
            DetectionDataset(manifest, boxes, 0.5, train=True, seed=3, cache_mb=cache_mb)]


# MB of one decoded frame: image + labels at scale 0.5, native image + labels, image at scale 0.5
FRAME_MB = [b / 2**20 for b in (H * W, H * W * 4, H * W * 3 / 4)]


def _flat(item):
    x, y = item
    return [x, *(y.values() if isinstance(y, dict) else [y])]


@pytest.mark.parametrize("kind", [0, 1, 2], ids=["image", "region", "detection"])
def test_items_are_identical_with_and_without_the_cache(manifest, kind):
    tight_mb = 1.5 * FRAME_MB[kind]  # room for one of the two frames
    off, full, tight = (_datasets(manifest, mb)[kind] for mb in (0, 512, tight_mb))
    for epoch in range(3):  # epochs 1 and 2 read cached frames
        for ds in (off, full, tight):
            ds.set_epoch(epoch)
        for i in list(range(len(off))) + [0, len(off) - 1]:
            a, b, c = _flat(off[i]), _flat(full[i]), _flat(tight[i])
            assert all(torch.equal(u, v) and torch.equal(u, w) for u, v, w in zip(a, b, c)), (epoch, i)
    assert len(off.cache) == 0 and off.cache.hits == 0
    assert len(full.cache) == 2 and full.cache.misses == 2  # decoded once each
    assert full.cache.nbytes == sum(nbytes(full.load(s)) for s in (0, 1)) == 2 * FRAME_MB[kind] * 2**20
    assert len(tight.cache) == 1 and tight.cache.nbytes <= tight_mb * 2**20 and tight.cache.misses > 2


# ---------------------------------------------------------------- regions.cut

def _view(box, size: int) -> View:
    return View(tuple(int(v) for v in box), tuple(float(v) for v in box), (size, size))


def test_cut_mask_is_nearest():
    g = np.random.default_rng(0)
    lab = torch.from_numpy(g.choice(np.array([0, 5, 13, IGNORE], np.uint8), size=(1, 30, 40)))
    for box, size in [((3.3, 2.7, 27.9, 21.2), 17), ((0, 0, 40, 30), 64), ((10, 10, 13, 12), 5)]:
        out = cut(lab, _view(box, size), mask=True)
        assert out.shape == (1, size, size) and out.dtype == torch.uint8
        assert set(out.unique().tolist()) <= {0, 5, 13, IGNORE}
    # an integer box at the output size is an exact cut
    assert torch.equal(cut(lab, _view((4, 6, 20, 22), 16), mask=True), lab[:, 6:22, 4:20])
    # an image crop is interpolated (values between the inputs)
    img = lab.float()
    out = cut(img, _view((3.3, 2.7, 27.9, 21.2), 17))
    assert out.shape == (1, 17, 17)
