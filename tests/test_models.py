"""nightlab.models: segmentation network, light adaptation, night-aware loss, RDN and the model store."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nightlab.config import RdnConfig
from nightlab.labels import IGNORE, NUM_CLASSES
from nightlab.models import SegModel
from nightlab.models.light import LightAdaptation, light_regulariser
from nightlab.models.loss import exposure_weights, make_loss, seg_loss
from nightlab.models.rdn import RDN, RpnSettings, SharedBackbone, auto_anchor_sizes, rdn_config, rdn_from_config
from nightlab.models.store import load_seg_model, load_state, save_model, seg_config


def _seg(light: bool = True, seed: int = 0) -> SegModel:
    torch.manual_seed(seed)
    return SegModel("resnet18", NUM_CLASSES, decoder_channels=8, light_adaptation=light)


# ---------------------------------------------------------------- SegModel

@pytest.mark.parametrize("light", [True, False])
@pytest.mark.parametrize("hw", [(37, 70), (32, 64), (17, 23)])
def test_seg_model_output_is_input_size(light, hw):
    model = _seg(light).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        logits, alpha, relit = model.forward_with_aux(x)
        out = model(x)
    assert logits.shape == (2, NUM_CLASSES, *hw)
    assert torch.equal(out, logits)
    assert relit.shape == x.shape
    if light:
        assert alpha is not None and alpha.shape[-2:] == hw
    else:
        assert alpha is None and torch.equal(relit, x)


def test_seg_model_trains_in_train_mode_and_gets_gradients():
    model = _seg(True).train()
    x = torch.rand(2, 3, 32, 64)
    y = torch.randint(0, NUM_CLASSES, (2, 32, 64))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.decoder.classifier.weight.grad is not None
    assert model.light.net[-1].weight.grad is not None  # light adaptation is trained end to end


# ---------------------------------------------------------------- light adaptation

def test_light_adaptation_is_identity_at_init():
    torch.manual_seed(0)
    la = LightAdaptation()
    x = torch.rand(2, 3, 33, 47)
    y, alpha = la(x)
    assert torch.equal(y, x)
    assert alpha.shape == (2, 3 * la.iterations, 33, 47) and (alpha == 0).all()
    y_small, _ = la(torch.rand(1, 3, 8, 8))  # below 16 px: no pooling
    assert y_small.shape == (1, 3, 8, 8)


def test_light_adaptation_keeps_values_in_unit_range():
    torch.manual_seed(0)
    la = LightAdaptation()
    with torch.no_grad():
        for p in la.parameters():
            p.normal_(0, 3.0)  # strong, random curves
    x = torch.rand(2, 3, 40, 40)
    x[0, :, :5] = 0.0
    x[0, :, 5:10] = 1.0
    y, alpha = la(x)
    assert alpha.abs().max() <= 1
    assert alpha.abs().max() > 0.5  # the curves really act
    assert not torch.allclose(y, x)
    assert y.min() >= 0 and y.max() <= 1
    assert (y[0, :, :5] == 0).all() and (y[0, :, 5:10] == 1).all()  # 0 and 1 are fixed points
    reg = light_regulariser(alpha, y)
    assert reg.ndim == 0 and torch.isfinite(reg) and reg >= 0


# ---------------------------------------------------------------- night-aware loss

def _cfg(night: bool, dark_weight: float = 2.0, light_reg: float = 0.0):
    return SimpleNamespace(night_aware_loss=night, dark_weight=dark_weight, light_reg=light_reg)


def test_exposure_weights():
    img = torch.empty(1, 3, 1, 4)
    img[..., 0] = 0.5  # mid-grey
    img[..., 1] = 0.0  # black
    img[..., 2] = 1.0  # white
    img[..., 3] = 0.3  # ordinary
    w = exposure_weights(img, dark_weight=2.0)
    assert w.shape == (1, 1, 4)
    assert w[0, 0].tolist() == pytest.approx([1.0, 3.0, 3.0, 1.0])
    # dark-ish pixels get a weight between 1 and 1 + dark_weight, growing as they darken
    ramp = torch.linspace(0, 0.15, 6).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    wr = exposure_weights(ramp, dark_weight=2.0)[0, 0]
    assert (wr[:-1] > 1).all() and (wr.diff() < 0).all() and wr[-1] == pytest.approx(1.0)
    assert torch.equal(exposure_weights(img, dark_weight=0.0), torch.ones(1, 1, 4))


def test_seg_loss_is_plain_ce_when_night_aware_loss_is_off():
    torch.manual_seed(0)
    logits = torch.randn(2, NUM_CLASSES, 8, 9)
    target = torch.randint(0, NUM_CLASSES, (2, 8, 9))
    target[0, :2] = IGNORE
    image = torch.rand(2, 3, 8, 9) * 0.1  # dark: weights would differ if they were used
    alpha = torch.rand(2, 12, 8, 9)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert torch.equal(seg_loss(logits, target, image, alpha, image, _cfg(False, 5.0, 1.0)), ce)
    # night-aware with zero extra weight and no regulariser is the same CE
    assert seg_loss(logits, target, image, alpha, image, _cfg(True, 0.0, 0.0)) == pytest.approx(ce.item(), rel=1e-6)
    # with weight on the dark pixels it differs; the regulariser adds on top
    nl = seg_loss(logits, target, image, alpha, image, _cfg(True, 2.0, 0.0))
    assert nl.item() != pytest.approx(ce.item(), rel=1e-4)
    nl_reg = seg_loss(logits, target, image, alpha, image, _cfg(True, 2.0, 1.0))
    assert nl_reg.item() == pytest.approx(nl.item() + light_regulariser(alpha, image).item(), rel=1e-5)


def test_seg_loss_all_ignore_is_finite():
    logits = torch.randn(1, NUM_CLASSES, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE)
    loss = seg_loss(logits, target, torch.rand(1, 3, 4, 4), None, None, _cfg(True))
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_make_loss_runs_the_model():
    model = _seg(True)
    x, y = torch.rand(2, 3, 32, 32), torch.randint(0, NUM_CLASSES, (2, 32, 32))
    loss = make_loss(_cfg(True, 1.0, 0.01))(model, x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)


# ---------------------------------------------------------------- RDN

def _rdn(seed: int = 0, **kw) -> RDN:
    torch.manual_seed(seed)
    kw.setdefault("post_nms_top_n", 20)
    kw.setdefault("pre_nms_top_n", 100)
    return RDN("resnet18", (8, 16, 32), RpnSettings(**kw))


def _det_batch():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 64, generator=g)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 24.0, 40.0], [40.0, 30.0, 56.0, 46.0]])},
               {"boxes": torch.tensor([[20.0, 10.0, 36.0, 26.0]])}]
    return images, targets


def test_rdn_returns_proposals_and_losses():
    model = _rdn().train()
    images, targets = _det_batch()
    boxes, scores, losses = model(images, targets)
    assert len(boxes) == len(scores) == 2
    for b, s in zip(boxes, scores):
        assert b.ndim == 2 and b.shape[1] == 4 and 0 < len(b) <= 20 and len(s) == len(b)
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 64).all() and (b[:, 3] <= 64).all()
        assert (s >= 0).all() and (s <= 1).all()
        assert (s[:-1] >= s[1:]).all()  # sorted by objectness
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        boxes, scores, losses = model(images)
    assert losses == {} and len(boxes) == 2


@pytest.mark.parametrize("sizes", [(8, 16, 32), (8, 16, 32, 48), (16,)])
def test_rdn_with_fpn_runs(sizes):
    # an odd number of anchor sizes (auto_anchor_sizes may give one) must still split over two levels
    torch.manual_seed(0)
    model = RDN("resnet18", sizes, RpnSettings(fpn=True, pre_nms_top_n=100, post_nms_top_n=20)).train()
    images, targets = _det_batch()
    boxes, _, losses = model(images, targets)
    assert model.backbone.levels == 2 and len(boxes) == 2 and set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_rdn_training_lowers_its_loss_in_a_few_steps():
    model = _rdn().train()
    images, targets = _det_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def total() -> torch.Tensor:
        torch.manual_seed(123)  # the same anchor sample every time
        return sum(model(images, targets)[2].values())

    with torch.no_grad():
        before = total().item()
    for _ in range(6):
        loss = total()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = total().item()
    assert after < 0.95 * before, (before, after)  # about 0.71 -> 0.62


def test_auto_anchor_sizes():
    assert auto_anchor_sizes(np.array([])) == (16, 32, 64, 128)
    assert auto_anchor_sizes(np.array([]), n=2) == (16, 32)
    sides = np.random.default_rng(0).uniform(10, 100, 500)
    sizes = auto_anchor_sizes(sides, n=4)
    assert len(sizes) == 4 and list(sizes) == sorted(set(sizes))
    lo, hi = np.percentile(sides, [10, 95])
    assert sizes[0] == round(lo) and sizes[-1] == round(hi)
    assert all(isinstance(s, int) for s in sizes)
    # tiny boxes: at least 4 px, still increasing
    tiny = auto_anchor_sizes(np.full(20, 1.0), n=3)
    assert tiny[0] == 4 and list(tiny) == sorted(set(tiny))


# ---------------------------------------------------------------- model store

def test_rdn_config_round_trip_through_the_store(tmp_path):
    cfg = RdnConfig(backbone="resnet18", post_nms_top_n=15, pre_nms_top_n=80, nms_thresh=0.6, image_scale=0.5)
    torch.manual_seed(0)
    model = RDN(cfg.backbone, (8, 16), RpnSettings.of(cfg)).eval()
    save_model(tmp_path / "rdn", model, rdn_config(cfg, (8, 16)))
    assert sorted(p.name for p in (tmp_path / "rdn").iterdir()) == ["config.json", "model.pt"]
    state, conf = load_state(tmp_path / "rdn")
    assert conf["arch"] == "rdn" and conf["anchor_sizes"] == [8, 16] and conf["image_scale"] == 0.5
    torch.manual_seed(1)  # other initial weights: all must come from the state dict
    loaded = rdn_from_config(conf)
    loaded.load_state_dict(state)
    loaded.eval()
    assert loaded.rpn.post_nms_top_n() == 15 and loaded.rpn.nms_thresh == 0.6
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        b1, s1, _ = model(x)
        b2, s2, _ = loaded(x)
    assert torch.equal(b1[0], b2[0]) and torch.equal(s1[0], s2[0])


def test_seg_model_round_trip_through_the_store(tmp_path):
    model = _seg(True).eval()
    cfg = SimpleNamespace(backbone="resnet18", decoder_channels=8, light_adaptation=True, image_scale=0.5)
    conf = seg_config(cfg)
    assert conf == {"arch": "seg", "backbone": "resnet18", "decoder_channels": 8, "light_adaptation": True,
                    "num_classes": NUM_CLASSES, "image_scale": 0.5}
    save_model(tmp_path / "seg", model, conf)
    torch.manual_seed(5)
    loaded, conf2 = load_seg_model(tmp_path / "seg")
    assert conf2 == conf and not loaded.training
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


# ---------------------------------------------------------------- RDN on the image model's backbone (shared)

def _shared_rdn(seg: SegModel, fpn: bool = False) -> RDN:
    torch.manual_seed(5)
    return RDN(SharedBackbone(seg, fpn), (8, 16, 32), RpnSettings(fpn=fpn, pre_nms_top_n=100, post_nms_top_n=20))


@pytest.mark.parametrize("fpn", [False, True])
def test_shared_rdn_trains_its_head_and_leaves_the_image_backbone_as_it_was(fpn):
    seg = _seg(seed=3)
    before = {k: v.clone() for k, v in seg.state_dict().items()}
    model = _shared_rdn(seg, fpn).train()
    assert model.backbone.strides == ([8, 16] if fpn else [8])
    # batch norm keeps the image model's statistics, in training mode too
    assert not model.backbone.body.training and not model.backbone.light.training and model.rpn.training
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    images, targets = _det_batch()
    head = {k: v.clone() for k, v in model.rpn.state_dict().items()}
    for _ in range(2):
        loss = sum(model(images, targets)[2].values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = seg.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the image model's weights or BN stats moved"
    assert any(not torch.equal(head[k], v) for k, v in model.rpn.state_dict().items()), "the RPN head did not train"


def test_shared_rdn_round_trips_through_the_store_without_the_image_model(tmp_path):
    from nightlab.models.rdn import build_rdn, load_rdn

    seg = _seg(seed=3).eval()
    cfg = RdnConfig(backbone="shared", post_nms_top_n=15, pre_nms_top_n=80, image_scale=0.5)
    torch.manual_seed(5)
    model = build_rdn(cfg, (8, 16, 32), seg).eval()
    image_cfg = seg_config(SimpleNamespace(backbone="resnet18", decoder_channels=8, light_adaptation=True,
                                           image_scale=0.5))
    save_model(tmp_path / "rdn", model, rdn_config(cfg, (8, 16, 32), image_cfg))
    torch.manual_seed(9)  # other initial weights: the backbone's too must come from the RDN's own file
    loaded, conf = load_rdn(tmp_path / "rdn")
    assert conf["backbone"] == "shared" and conf["image_model"]["decoder_channels"] == 8
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        (b1,), (s1,), _ = model(x)
        (b2,), (s2,), _ = loaded(x)
    assert torch.equal(b1, b2) and torch.equal(s1, s2)


def test_one_backbone_pass_gives_what_the_two_separate_passes_give():
    from nightlab.inference import image_logits, image_logits_and_proposals, propose
    from nightlab.models.rdn import shares_backbone

    seg = _seg(seed=3).eval()
    model = _shared_rdn(seg).eval()
    img = (np.random.default_rng(0).random((96, 160, 3)) * 255).astype(np.uint8)
    logits, (boxes, scores) = image_logits_and_proposals(seg, model, img, 0.5, "cpu")
    (b, s), = propose(model, [img], 0.5, "cpu")
    assert torch.equal(logits, image_logits(seg, img, 0.5, "cpu"))
    assert np.array_equal(boxes, b) and np.array_equal(scores, s) and len(b) > 0
    assert shares_backbone(model, seg)
    assert not shares_backbone(model, _seg(seed=4)), "an RDN trained on other image weights must not share"
    assert not shares_backbone(_rdn(), seg), "an RDN with its own backbone shares nothing"


def test_class_map_is_argmax_with_the_first_maximum_on_ties():
    from nightlab.inference import class_map

    g = torch.Generator().manual_seed(0)
    probs = torch.randint(0, 3, (5, 40, 50), generator=g).float()  # many ties
    assert torch.equal(class_map(probs), probs.argmax(0))
    assert class_map(torch.zeros(4, 2, 2)).eq(0).all()
