"""nightlab.train.fit: loss goes down, checkpoints, resume after a kill, determinism."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from fixtures_data import ENCODING, FlippedPairs, make_dataset, sample_paths

from nightlab.config import ImageTrainConfig
from nightlab.data.dataset import ImageDataset
from nightlab.data.manifest import Manifest
from nightlab.labels import NUM_CLASSES
from nightlab.models import SegModel
from nightlab.models.loss import make_loss
from nightlab.train import CKPT_NAME, Run, curve_drop, fit, seed_everything

CPU = torch.device("cpu")
LOSS = make_loss(SimpleNamespace(night_aware_loss=True, dark_weight=1.0, light_reg=0.01))
PARAMS = {"image_model": {"backbone": "test_resnet", "decoder_channels": 8}, "seed": 0}


@pytest.fixture(autouse=True)
def _restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


class TinySet(FlippedPairs):
    """Four fixed (image, mask) pairs."""

    def __init__(self, n: int = 4, h: int = 32, w: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(42)
        self.x = torch.rand(n, 3, h, w, generator=g)
        self.y = torch.zeros(n, h, w, dtype=torch.long)
        for i in range(n):  # a learnable mapping: the brighter half of the image is class 1 (+ i)
            self.x[i, :, :, w // 2:] *= 0.3
            self.y[i, :, : w // 2] = 1 + i % 3
        self.seed, self.epoch = seed, 0


# timm's tiny "test_resnet" (0.4 M parameters, the resnet18 layout): the loop, not the network, is under test,
# and a resnet18 checkpoint with AdamW state is ~130 MB per write.
BACKBONE = "test_resnet"


def _model(seed: int = 0) -> SegModel:
    torch.manual_seed(seed)
    return SegModel(BACKBONE, NUM_CLASSES, decoder_channels=8, light_adaptation=True)


def _cfg(**kw) -> ImageTrainConfig:
    base = dict(iters=6, batch_size=2, lr=2e-3, ckpt_every=2, log_every=1, workers=0, amp=False)
    base.update(kw)
    return ImageTrainConfig(**base)


def _run(out_dir: Path, dataset, cfg: ImageTrainConfig, seed: int = 0, stop_after=None, params=PARAMS):
    seed_everything(seed)
    model = _model(seed)
    curve = fit(model, dataset, LOSS, cfg, Run(out_dir, seed, CPU, params), stop_after=stop_after)
    return model, curve


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _image_dataset(tmp_path: Path, seed: int = 0, cache_mb: float = 512) -> ImageDataset:
    root = make_dataset("cityscapes", tmp_path / "raw", splits=("train",), n=4, h=32, w=64)
    rows = []
    for i in range(4):
        p = sample_paths("cityscapes", "train", i)
        rows.append(dict(split="train", domain="night", image=p["image"], label=p["label"], instance=p["instance"],
                         height=32, width=64, source="cityscapes", encoding=ENCODING["cityscapes"]))
    m = Manifest(pd.DataFrame(rows), root)
    return ImageDataset(m, scale=1.0, train=True, crop=(24, 48), hflip=True, seed=seed, cache_mb=cache_mb)


# ---------------------------------------------------------------- learning

def test_a_few_iterations_lower_the_loss(tmp_path):
    cfg = _cfg(iters=10, batch_size=2, lr=1e-2, ckpt_every=100, log_every=1)
    _, curve = _run(tmp_path, TinySet(), cfg)
    assert curve.iter.tolist() == list(range(1, 11))
    assert curve.loss.tail(3).mean() < 0.75 * curve.loss.head(3).mean(), curve.loss.tolist()  # ~4.5 -> ~2.9
    assert curve_drop(curve) > 0.2
    assert (tmp_path / "train_log.csv").is_file()
    # the poly schedule decays the learning rate to 0 at the end
    assert curve.lr.iloc[0] < 1e-2 and curve.lr.iloc[-1] == pytest.approx(0.0, abs=1e-12)
    assert (curve.lr.diff().dropna() <= 0).all()


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_contents(tmp_path):
    cfg = _cfg(iters=6, ckpt_every=4)
    model, _ = _run(tmp_path, TinySet(), cfg, stop_after=3)
    ckpt = torch.load(tmp_path / CKPT_NAME, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "iter", "params"} <= set(ckpt)
    assert ckpt["iter"] == 3  # written at the stop point
    assert ckpt["epoch"] == 1  # 2 batches per epoch
    assert ckpt["params"] == PARAMS
    assert ckpt["lr_scheduler"]["last_epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["model"][k], v), k
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(CKPT_NAME) and p.name != CKPT_NAME] == []


def test_checkpoint_with_other_params_is_not_resumed(tmp_path):
    cfg = _cfg(iters=4)
    _run(tmp_path, TinySet(), cfg, stop_after=2)
    _, curve = _run(tmp_path, TinySet(), cfg, params={**PARAMS, "seed": 1})
    assert curve.iter.tolist() == [1, 2, 3, 4]  # started over
    assert torch.load(tmp_path / CKPT_NAME, weights_only=True)["params"]["seed"] == 1


# ---------------------------------------------------------------- resume and determinism

def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    ds = TinySet()
    cfg = _cfg(iters=5, ckpt_every=2)
    full, full_curve = _run(tmp_path / "full", ds, cfg)

    # "killed" mid-epoch after 3 iterations (2 batches per epoch), then restarted as a new process would
    _run(tmp_path / "resumed", TinySet(), cfg, stop_after=3)
    assert torch.load(tmp_path / "resumed" / CKPT_NAME, weights_only=True)["iter"] == 3
    resumed, curve = _run(tmp_path / "resumed", TinySet(), cfg)

    _assert_same_weights(full, resumed)
    assert curve.iter.tolist() == full_curve.iter.tolist() == list(range(1, 6))
    assert curve.loss.tolist() == full_curve.loss.tolist()
    assert curve.lr.tolist() == full_curve.lr.tolist()


def test_resume_with_the_image_dataset_augmentation(tmp_path):
    ds_full = _image_dataset(tmp_path / "a")
    cfg = _cfg(iters=5, ckpt_every=2)
    full, _ = _run(tmp_path / "full", ds_full, cfg)
    _run(tmp_path / "resumed", _image_dataset(tmp_path / "b"), cfg, stop_after=2)
    resumed, _ = _run(tmp_path / "resumed", _image_dataset(tmp_path / "c"), cfg)
    _assert_same_weights(full, resumed)
    # a run that has finished does nothing more when called again
    again, curve = _run(tmp_path / "resumed", _image_dataset(tmp_path / "c"), cfg)
    _assert_same_weights(full, again)
    assert curve.iter.max() == 5


def test_the_frame_cache_does_not_change_training(tmp_path):
    """Decoding on demand, a bounded cache and a cache of everything train the same weights, bit for bit."""
    cfg = _cfg(iters=6, ckpt_every=100)  # 3 epochs of 2 batches: later epochs read cached frames
    frame = 32 * 64 * 4 / 2**20
    runs = {mb: _run(tmp_path / f"run{mb}", _image_dataset(tmp_path / f"data{mb}", cache_mb=mb), cfg)
            for mb in (512, 0, 1.5 * frame)}
    (full, curve), *others = runs.values()
    for model, c in others:
        _assert_same_weights(full, model)
        assert c.loss.tolist() == curve.loss.tolist()


def test_two_runs_with_the_same_seed_are_identical(tmp_path):
    cfg = _cfg(iters=3)
    a, ca = _run(tmp_path / "a", TinySet(), cfg, seed=3)
    b, cb = _run(tmp_path / "b", TinySet(), cfg, seed=3)
    _assert_same_weights(a, b)
    assert ca.loss.tolist() == cb.loss.tolist()
    c, _ = _run(tmp_path / "c", TinySet(), cfg, seed=4)
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
