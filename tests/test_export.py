"""nightlab.export: TorchScript export of a saved segmentation model, checked against eager PyTorch."""
from __future__ import annotations

import pytest
import torch

from nightlab.export import export_model
from nightlab.labels import NUM_CLASSES
from nightlab.models import SegModel
from nightlab.models.store import load_seg_model, save_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecation notice of TorchScript

CONFIG = {"arch": "seg", "backbone": "resnet18", "decoder_channels": 8, "light_adaptation": True,
          "num_classes": 19, "image_scale": 0.5}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("export") / "image"
    torch.manual_seed(0)
    model = SegModel("resnet18", NUM_CLASSES, decoder_channels=8, light_adaptation=True)
    with torch.no_grad():  # a light module that acts (it is the identity at init) and non-trivial BN statistics
        model.light.net[-1].weight.normal_(0, 0.1)
        model.train()
        for _ in range(2):
            model(torch.rand(2, 3, 32, 64))
    save_model(d, model, CONFIG)
    return d


def test_export_matches_eager(model_dir, tmp_path):
    out = tmp_path / "image.ts"
    diff = export_model(model_dir, out, (32, 64))
    assert out.is_file() and 0 <= diff <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["image.ts"]  # written atomically, no temp left

    eager, _ = load_seg_model(model_dir)
    scripted = torch.jit.load(str(out))
    assert isinstance(scripted, torch.jit.ScriptModule)
    for shape in [(1, 3, 48, 96), (2, 3, 40, 72)]:  # sizes other than the traced one
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            a, b = scripted(x), eager(x)
        assert a.shape == (shape[0], NUM_CLASSES, *shape[2:])
        assert (a - b).abs().max().item() <= 1e-4


def test_export_without_light_adaptation(tmp_path):
    torch.manual_seed(0)
    model = SegModel("resnet18", NUM_CLASSES, decoder_channels=8, light_adaptation=False)
    save_model(tmp_path / "m", model, {**CONFIG, "light_adaptation": False})
    diff = export_model(tmp_path / "m", tmp_path / "m.ts", (32, 32))
    assert diff <= 1e-4
    x = torch.rand(1, 3, 64, 48)
    eager, _ = load_seg_model(tmp_path / "m")
    with torch.no_grad():
        assert (torch.jit.load(str(tmp_path / "m.ts"))(x) - eager(x)).abs().max().item() <= 1e-4
