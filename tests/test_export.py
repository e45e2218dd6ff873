"""nightlab.export: TorchScript and ONNX export of saved models, checked against eager PyTorch."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nightlab.export import ExportError, export_onnx, export_torchscript, ort_session
from nightlab.io import DataError
from nightlab.labels import NUM_CLASSES
from nightlab.models import SegModel
from nightlab.models.rdn import RDN, RpnSettings, load_rdn, rdn_config
from nightlab.models.store import load_seg_model, save_model, seg_from_config
from nightlab_cli.main import main as nightlab_main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecation notice of TorchScript

CONFIG = {"arch": "seg", "backbone": "resnet18", "decoder_channels": 16, "light_adaptation": True,
          "num_classes": 19, "image_scale": 0.5}
RDN_CFG = SimpleNamespace(backbone="resnet18", fpn=True, aspect_ratios=(0.5, 1.0, 2.0), pre_nms_top_n=600,
                          post_nms_top_n=100, nms_thresh=0.7, fg_iou_thresh=0.5, bg_iou_thresh=0.3, image_scale=0.5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("export") / "image"
    torch.manual_seed(0)
    model = SegModel("resnet18", NUM_CLASSES, decoder_channels=16, light_adaptation=True)
    with torch.no_grad():  # a light module that acts (it is the identity at init) and non-trivial BN statistics
        model.light.net[-1].weight.normal_(0, 0.1)
        model.train()
        for _ in range(2):
            model(torch.rand(2, 3, 32, 64))
    save_model(d, model, CONFIG)
    return d


@pytest.fixture(scope="module")
def rdn_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("export") / "rdn"
    torch.manual_seed(0)
    rdn = RDN("resnet18", (8, 16, 32), RpnSettings(fpn=True))
    with torch.no_grad():  # the head's init (std 0.01) gives outputs too small for a 1e-4 check to mean much
        for p in rdn.rpn.head.parameters():
            p.normal_(0, 0.1)
    save_model(d, rdn, rdn_config(RDN_CFG, (8, 16, 32)))
    return d


def test_torchscript_matches_eager(model_dir, tmp_path):
    out = tmp_path / "image.ts"
    diff = export_torchscript(model_dir, out, (32, 64))
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


def test_torchscript_without_light_adaptation(tmp_path):
    torch.manual_seed(0)
    model = SegModel("resnet18", NUM_CLASSES, decoder_channels=8, light_adaptation=False)
    save_model(tmp_path / "m", model, {**CONFIG, "decoder_channels": 8, "light_adaptation": False})
    diff = export_torchscript(tmp_path / "m", tmp_path / "m.ts", (32, 32))
    assert diff <= 1e-4
    x = torch.rand(1, 3, 64, 48)
    eager, _ = load_seg_model(tmp_path / "m")
    with torch.no_grad():
        assert (torch.jit.load(str(tmp_path / "m.ts"))(x) - eager(x)).abs().max().item() <= 1e-4


def test_a_region_model_that_refines_the_image_level_exports_with_its_prior_input(tmp_path):
    """region_model.prior: image (the default) gives a PriorRefiner, whose forward also takes the image
    level's logits cut to each view: both formats export it with that second input, and reproduce it."""
    torch.manual_seed(0)
    cfg = {**CONFIG, "decoder_channels": 8, "region_size": 32, "prior": "image", "prior_temperature": 1.0}
    model = seg_from_config(cfg)
    with torch.no_grad():  # a correction that acts: at init the gate and the prior's projection are zero
        model.gate.fill_(0.7)
        model.prior_proj.weight.normal_(0, 0.1)
    save_model(tmp_path / "region", model, cfg)
    assert export_torchscript(tmp_path / "region", tmp_path / "region.ts", (32, 32)) <= 1e-4
    assert export_onnx(tmp_path / "region", tmp_path / "region.onnx", (32, 32)) <= 1e-4

    session = ort_session(tmp_path / "region.onnx")
    assert [i.name for i in session.get_inputs()] == ["image", "prior_logits"]
    gen = torch.Generator().manual_seed(1)
    x, prior = torch.rand(3, 3, 32, 64, generator=gen), 4 * torch.randn(3, NUM_CLASSES, 32, 64, generator=gen)
    eager, _ = load_seg_model(tmp_path / "region")
    with torch.no_grad():
        want = eager(x, prior)
        assert (want - eager(x, torch.zeros_like(prior))).abs().max() > 0.1  # the prior input matters
        assert (torch.jit.load(str(tmp_path / "region.ts"))(x, prior) - want).abs().max() <= 1e-4
    got = session.run(None, {"image": x.numpy(), "prior_logits": prior.numpy()})[0]
    assert np.abs(got - want.numpy()).max() <= 1e-4


def test_onnx_seg_model_matches_eager_at_other_sizes(model_dir, tmp_path):
    out = tmp_path / "image.onnx"
    diff = export_onnx(model_dir, out, (32, 64))
    assert 0 <= diff <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["image.onnx"]  # written atomically, no temp left

    session = ort_session(out)
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    eager, _ = load_seg_model(model_dir)
    for shape in [(1, 3, 48, 96), (3, 3, 50, 70)]:  # sizes (and batches) other than the exported one
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = eager(x)
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == (shape[0], NUM_CLASSES, *shape[2:])
        assert want.abs().max() > 0.1  # outputs large enough for the tolerance to mean something
        assert np.abs(got - want.numpy()).max() <= 1e-4


def test_onnx_rdn_network_matches_eager_and_gives_the_same_proposals(rdn_dir, tmp_path):
    out = tmp_path / "rdn.onnx"
    assert export_onnx(rdn_dir, out, (64, 96)) <= 1e-4

    session = ort_session(out)
    names = [o.name for o in session.get_outputs()]
    assert names == ["objectness_s8", "box_deltas_s8", "objectness_s16", "box_deltas_s16"]
    rdn, _ = load_rdn(rdn_dir)
    x = torch.rand(2, 3, 80, 112, generator=torch.Generator().manual_seed(1))
    got = [torch.from_numpy(o) for o in session.run(None, {"image": x.numpy()})]
    with torch.no_grad():
        objectness, deltas = rdn.network(x)
        want = [t for pair in zip(objectness, deltas) for t in pair]
        assert [g.shape for g in got] == [w.shape for w in want]
        assert got[0].shape == (2, 6, 10, 14) and got[3].shape == (2, 24, 5, 7)
        assert all(w.abs().max() > 0.1 for w in want)
        assert max((g - w).abs().max().item() for g, w in zip(got, want)) <= 1e-4
        # The rest of the RDN stays in PyTorch: the network's ONNX outputs give eager's proposals.
        boxes, scores, _ = rdn.proposals(x, got[0::2], got[1::2])
        eager_boxes, eager_scores, _ = rdn(x)
    for b, s, eb, es in zip(boxes, scores, eager_boxes, eager_scores):
        assert len(b) == len(eb) > 0
        assert torch.allclose(b, eb, atol=1e-3) and torch.allclose(s, es, atol=1e-5)


def test_onnx_shared_backbone_rdn_network_matches_eager(model_dir, tmp_path):
    """rdn.backbone: shared exports the image model's light adaptation and backbone with the RPN head."""
    from nightlab.models.rdn import SharedBackbone

    image_model, image_cfg = load_seg_model(model_dir)
    torch.manual_seed(0)
    rdn = RDN(SharedBackbone(image_model, False), (8, 16, 32)).eval()
    with torch.no_grad():
        for p in rdn.rpn.head.parameters():
            p.normal_(0, 0.1)
    d = tmp_path / "shared"
    save_model(d, rdn, rdn_config(SimpleNamespace(**{**vars(RDN_CFG), "backbone": "shared", "fpn": False}),
                                  (8, 16, 32), image_cfg))
    out = tmp_path / "rdn.onnx"
    assert export_onnx(d, out, (64, 96)) <= 1e-4
    assert [o.name for o in ort_session(out).get_outputs()] == ["objectness_s8", "box_deltas_s8"]


def test_onnx_export_beyond_tolerance_fails_and_writes_nothing(model_dir, tmp_path):
    with pytest.raises(ExportError, match=r"image\.onnx: onnxruntime differs from eager PyTorch by .* not written"):
        export_onnx(model_dir, tmp_path / "image.onnx", (32, 64), atol=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_missing_model_directory_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "models" / "image"
    for export in (export_onnx, export_torchscript):
        with pytest.raises(DataError, match=re.escape(f"{missing}: model directory not found")):
            export(missing, tmp_path / "out", (32, 32))
    assert nightlab_main(["export", "--format", "onnx", "--models", str(tmp_path / "models"),
                          "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {missing / 'config.json'}: file not found") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_exports_onnx(model_dir, rdn_dir, tmp_path, capsys):
    models = tmp_path / "models"
    for name, src in (("image", model_dir), ("region", model_dir), ("rdn", rdn_dir)):
        (models / name).mkdir(parents=True)
        for f in src.iterdir():
            (models / name / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "export"
    assert nightlab_main(["export", "--format", "onnx", "--detector", "rdn", "--models", str(models),
                          "--out", str(out), "--height", "32", "--width", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["image_model.onnx", "rdn_network.onnx", "region_model.onnx"]
    printed = capsys.readouterr().out
    assert f"{out / 'rdn_network.onnx'}: max |onnxruntime - eager| = " in printed
    assert "anchors, box decoding and NMS stay in PyTorch" in printed
