"""A user's own image-level model (image_model.external) and sliding-window inference
(image_model.window): loading both kinds, the output check with its clear error, the stage's
external branch, and tiles that agree with the whole-image pass."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from torch import nn

from flows.common import declared_params
from nightlab.config import ConfigError, Params, ParamsView, parse_params
from nightlab.export import export_torchscript
from nightlab.inference import image_probs, tile_starts, window_logits
from nightlab.io import DataError, read_json
from nightlab.labels import NUM_CLASSES
from nightlab.models import SegModel
from nightlab.models.store import (
    TORCHSCRIPT_FILE,
    file_md5,
    import_image_model,
    load_image_model,
    save_model,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
SEG = {"arch": "seg", "backbone": "test_resnet", "decoder_channels": 8, "light_adaptation": True,
       "num_classes": NUM_CLASSES, "image_scale": 0.5}


def _seg(seed: int = 0) -> SegModel:
    torch.manual_seed(seed)
    model = SegModel("test_resnet", NUM_CLASSES, decoder_channels=8)
    with torch.no_grad():
        model.light.net[-1].weight.normal_(0, 0.1)  # a light module that acts (it is the identity at init)
    return model.eval()


def _script(model: nn.Module, path, trace: bool = True):
    """A TorchScript file of ``model``: traced (as nightlab export does) or scripted."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        module = torch.jit.trace(model, torch.rand(1, 3, 32, 48)) if trace else torch.jit.script(model)
        torch.jit.save(module, str(path))
    return path


class PixelWise(nn.Module):
    """Each output pixel depends on its input pixel only: tiles must agree with the whole pass."""

    def __init__(self, classes: int = NUM_CLASSES):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return self.conv(x)


class Shrinks(nn.Module):
    """Logits at stride 2: a model that forgot to upsample to the input size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


# ---------------------------------------------------------------- sliding windows

def test_tile_starts_cover_with_half_stride_and_end_at_the_border():
    assert tile_starts(64, 64) == [0]
    assert tile_starts(100, 32) == [0, 16, 32, 48, 64, 68]
    assert tile_starts(33, 32) == [0, 1]
    for size, tile in [(100, 32), (257, 64), (70, 48), (5, 1)]:
        starts = tile_starts(size, tile)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s:s + tile] = True
        assert covered.all() and starts[-1] + tile == size
        assert all(0 < b - a <= max(1, tile // 2) for a, b in zip(starts, starts[1:]))


def test_window_equal_to_or_larger_than_the_image_is_the_whole_pass():
    model = _seg()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        whole = model(x)
    assert torch.equal(window_logits(model, x, (32, 48)), whole)
    assert torch.equal(window_logits(model, x, (64, 64)), whole)
    assert torch.equal(window_logits(model, x, None), whole)


def test_windows_of_a_pixelwise_model_average_to_the_whole_pass():
    model = PixelWise().eval()
    x = torch.rand(2, 3, 70, 101)
    with torch.no_grad():
        whole = model(x)
    tiled = window_logits(model, x, (32, 48))
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-5)  # every pixel covered, sums divided by the right count


def test_windows_average_overlapping_logits():
    calls = []

    class Constant(nn.Module):  # logit = the tile's index: overlaps show the average of the tiles there
        def forward(self, x):
            calls.append(tuple(x.shape[-2:]))
            return torch.full((x.shape[0], NUM_CLASSES, *x.shape[-2:]), float(len(calls)))

    out = window_logits(Constant(), torch.rand(1, 3, 32, 64), (32, 32))  # tiles at x = 0, 16, 32
    assert calls == [(32, 32)] * 3
    row = out[0, 0, 0]
    assert torch.all(row[:16] == 1) and torch.all(row[16:32] == 1.5) and torch.all(row[32:48] == 2.5)
    assert torch.all(row[48:] == 3)


def test_sliding_window_on_a_bigger_image_with_a_real_model():
    model = _seg()
    x = torch.rand(1, 3, 75, 130)
    out = window_logits(model, x, (32, 48))
    assert out.shape == (1, NUM_CLASSES, 75, 130) and torch.isfinite(out).all()
    image = (np.random.default_rng(0).random((150, 260, 3)) * 255).astype(np.uint8)
    probs = image_probs(model, image, 0.5, "cpu", window=(32, 48))
    assert probs.shape == (NUM_CLASSES, 150, 260) and torch.allclose(probs.sum(0), torch.ones(150, 260), atol=1e-5)


def test_window_config():
    assert Params().image_model.window is None and Params().image_model.external is None
    p = parse_params({"image_model": {"window": [256, 512], "external": "my/model.pt"}})
    assert p.image_model.window == (256, 512) and p.image_model.external == "my/model.pt"
    for bad, msg in [({"window": [16, 512]}, "at least 32"), ({"window": [64]}, "image_model.window"),
                     ({"external": " "}, "image_model.external")]:
        with pytest.raises(ConfigError, match=msg):
            parse_params({"image_model": bad})


# ---------------------------------------------------------------- external models

def test_torchscript_model_is_checked_written_and_loaded(tmp_path):
    model = _seg()
    src = _script(model, tmp_path / "mine.torchscript.pt")
    out = tmp_path / "models" / "image"
    cfg = import_image_model(src, out, 0.25)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", TORCHSCRIPT_FILE]
    assert read_json(out / "config.json") == cfg
    assert cfg["arch"] == "torchscript" and cfg["image_scale"] == 0.25 and cfg["num_classes"] == NUM_CLASSES
    assert cfg["external"] == {"path": str(src), "md5": {"mine.torchscript.pt": file_md5(src)}}

    loaded, lcfg = load_image_model(out)
    assert isinstance(loaded, torch.jit.ScriptModule) and lcfg == cfg
    x = torch.rand(1, 3, 40, 72)  # another size than the traced one
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() <= 1e-4
    image = (np.random.default_rng(1).random((80, 144, 3)) * 255).astype(np.uint8)
    p1 = image_probs(loaded, image, 0.5, "cpu")
    p2 = image_probs(model, image, 0.5, "cpu")
    assert p1.shape == (NUM_CLASSES, 80, 144) and (p1 - p2).abs().max() <= 1e-4
    assert image_probs(loaded, image, 0.5, "cpu", window=(32, 48)).shape == (NUM_CLASSES, 80, 144)
    assert export_torchscript(out, tmp_path / "exported.pt", (32, 48)) == 0.0  # `nightlab export` keeps it as it is


@pytest.mark.parametrize("name", ["dir", "model.pt"])
def test_store_saved_model_is_checked_written_and_loaded(tmp_path, name):
    model = _seg(3)
    save_model(tmp_path / "mine", model, {**SEG, "image_scale": 0.5})
    src = tmp_path / "mine" if name == "dir" else tmp_path / "mine" / "model.pt"
    out = tmp_path / "image"
    cfg = import_image_model(src, out, 0.75)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.pt"]
    assert cfg["arch"] == "seg" and cfg["image_scale"] == 0.75 and cfg["backbone"] == "test_resnet"
    assert cfg["external"]["md5"] == {"model.pt": file_md5(tmp_path / "mine" / "model.pt"),
                                      "config.json": file_md5(tmp_path / "mine" / "config.json")}
    assert file_md5(out / "model.pt") == file_md5(tmp_path / "mine" / "model.pt")
    loaded, _ = load_image_model(out)
    assert isinstance(loaded, SegModel)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("bad, needle", [
    (PixelWise(21), "returns shape (2, 21, 64, 96) for a (2, 3, 64, 96) input, expected (2, 19, 64, 96)"),
    (Shrinks(), "returns shape (2, 19, 32, 48)"),
])
def test_a_wrong_output_shape_is_a_clear_error_naming_the_file(tmp_path, bad, needle):
    src = _script(bad.eval(), tmp_path / "wrong.pt", trace=False)
    with pytest.raises(DataError) as err:
        import_image_model(src, tmp_path / "out", 0.5)
    assert str(err.value).startswith(f"{src}: ") and needle in str(err.value)
    assert not (tmp_path / "out").exists()


def test_other_bad_external_models_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(DataError, match=f"{junk}: not a TorchScript module"):
        import_image_model(junk, tmp_path / "out", 0.5)
    with pytest.raises(DataError, match="nowhere.pt: external image model not found"):
        import_image_model(tmp_path / "nowhere.pt", tmp_path / "out", 0.5)

    class Tuple(nn.Module):
        def forward(self, x):
            return x, x

    src = tmp_path / "tuple.pt"
    torch.jit.save(torch.jit.script(Tuple()), str(src))
    with pytest.raises(DataError, match="returns a tuple, expected one tensor"):
        import_image_model(src, tmp_path / "out", 0.5)

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(DataError, match="model.pt not found"):
        import_image_model(tmp_path / "half", tmp_path / "out", 0.5)
    save_model(tmp_path / "other", _seg(), {**SEG, "backbone": "resnet34"})  # weights of another network
    with pytest.raises(DataError, match="cannot rebuild the model saved there"):
        import_image_model(tmp_path / "other", tmp_path / "out", 0.5)


# ---------------------------------------------------------------- the stage's external branch

def test_train_image_model_stage_uses_the_external_model(tmp_path, monkeypatch):
    """flows.train_image_model.use_external through the stage's own params view (declared keys only):
    writes models/image as the model, an empty curve, and leaves it untouched when the next model is bad."""
    from flows.train_image_model import use_external
    from nightlab.train import CURVE_COLUMNS

    src = _script(_seg(), tmp_path / "mine.pt")
    monkeypatch.chdir(tmp_path)

    def view(external):
        p = parse_params({"device": "cpu", "image_model": {"external": str(external), "image_scale": 0.5}})
        return ParamsView(p, declared_params("train_image_model", ROOT / "dvc.yaml"), stage="train_image_model")

    p = view(src)
    assert use_external(p, logging.getLogger("test")) == {"external": str(src)}
    assert p.seen == {"device", "image_model.external", "image_model.image_scale"}
    cfg = read_json(tmp_path / "models/image/config.json")
    assert cfg["arch"] == "torchscript" and cfg["external"]["md5"] == {"mine.pt": file_md5(src)}
    assert list(pd.read_csv(tmp_path / "reports/image/train_curve.csv").columns) == CURVE_COLUMNS
    assert (tmp_path / "reports/image/train_curve.png").read_bytes()[:4] == b"\x89PNG"  # the plot dvc shows
    before = file_md5(tmp_path / "models/image" / TORCHSCRIPT_FILE)

    bad = _script(PixelWise(21).eval(), tmp_path / "bad.pt")
    with pytest.raises(DataError, match="bad.pt: the model returns shape"):
        use_external(view(bad), logging.getLogger("test"))
    assert file_md5(tmp_path / "models/image" / TORCHSCRIPT_FILE) == before
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["image"]  # no temporary left
