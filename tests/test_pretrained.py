"""Pretrained backbones (nightlab.models.segnet.create_backbone): null, ``timm`` or a local file.

Nothing here reaches the network: the ``timm`` cases run in a subprocess with HF_HUB_OFFLINE=1 and
their own empty (or hand-filled) HF_HOME and TORCH_HOME, read by huggingface_hub when it is imported.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

from nightlab.config import ConfigError, parse_params
from nightlab.models import build_seg_model
from nightlab.models.rdn import build_rdn
from nightlab.models.segnet import create_backbone, load_backbone_weights

ROOT = Path(__file__).resolve().parents[1]


def _offline_python(tmp_path: Path, code: str, hf_home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home or tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch")}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


# ---------------------------------------------------------------- timm weights

BUILD = """
    from nightlab.config import ConfigError, parse_params
    from nightlab.models import build_seg_model
    from nightlab.models.rdn import build_rdn
    p = parse_params({"image_model": {"pretrained": "timm"}, "rdn": {"pretrained": "timm", "fpn": True}})
    for build in (lambda: build_seg_model(p.image_model, 19), lambda: build_rdn(p.rdn, (16, 32))):
        try:
            build()
        except ConfigError as err:
            print("ERROR:", err)
"""


def test_timm_weights_offline_and_uncached_stop_with_one_message(tmp_path):
    res = _offline_python(tmp_path, BUILD)
    assert res.returncode == 0, res.stderr[-3000:]
    errors = res.stdout.split("ERROR: ")[1:]
    assert len(errors) == 2, res.stdout + res.stderr[-3000:]
    for option, err in zip(("image_model.pretrained", "rdn.pretrained"), errors):
        first = err.splitlines()[0]
        assert first == (f"{option}: timm: the pretrained weights of backbone 'resnet18' could not be downloaded "
                         "or found in the cache"), err
        assert "timm/resnet18.a1_in1k" in err and str(tmp_path / "hf") in err  # where it looked
        assert f"set {option} to a local checkpoint file" in err and "torch.save(timm.create_model(" in err
    assert "Traceback" not in res.stderr and "Retry" not in res.stderr, res.stderr[-3000:]


def test_timm_weights_come_from_the_cache_when_present(tmp_path):
    """A Hugging Face cache holding timm/resnet18.a1_in1k (here: weights we made) is used offline."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    full = timm.create_model("resnet18")
    snapshot = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    save_file(full.state_dict(), snapshot / "model.safetensors")
    torch.save(full.state_dict(), tmp_path / "expected.pt")
    res = _offline_python(tmp_path, f"""
        import torch
        from nightlab.config import parse_params
        from nightlab.models import build_seg_model
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        model = build_seg_model(parse_params({{"image_model": {{"pretrained": "timm"}}}}).image_model, 19)
        own = model.backbone.state_dict()
        assert own.keys() <= expected.keys(), sorted(own.keys() - expected.keys())[:3]
        assert all(torch.equal(own[k], expected[k]) for k in own)
        print("loaded", len(own))
    """)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.startswith("loaded "), res.stdout


def test_timm_needs_a_backbone_with_weights():
    with pytest.raises(ConfigError, match=r"region_model.pretrained = 'timm': timm has no pretrained weights "
                                          r"for backbone 'beit3_giant_patch14_224'"):
        parse_params({"region_model": {"backbone": "beit3_giant_patch14_224", "pretrained": "timm"}})
    with pytest.raises(ConfigError, match=r"rdn.pretrained = '': must be null, timm or a checkpoint file path"):
        parse_params({"rdn": {"pretrained": ""}})


# ---------------------------------------------------------------- local files

def _backbone_file(tmp_path: Path, name: str = "resnet18", seed: int = 1) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    state = timm.create_model(name, features_only=True).state_dict()
    path = tmp_path / f"{name}.pt"
    torch.save(state, path)
    return path, state


def test_a_local_checkpoint_loads_into_both_models(tmp_path):
    path, state = _backbone_file(tmp_path)
    torch.manual_seed(2)  # other initial weights: only loading can make them equal
    p = parse_params({"image_model": {"pretrained": str(path)}, "rdn": {"pretrained": str(path), "fpn": True}})
    seg = build_seg_model(p.image_model, 19).backbone.state_dict()
    assert seg.keys() == state.keys()
    assert all(torch.equal(seg[k], state[k]) for k in state)
    body = build_rdn(p.rdn, (16, 32)).backbone.body.state_dict()  # stops at stride 16: a subset of the keys
    assert 0 < len(body) < len(state)
    assert all(torch.equal(body[k], state[k]) for k in body)
    torch.manual_seed(2)
    scratch = build_seg_model(parse_params({}).image_model, 19).backbone.state_dict()
    assert not all(torch.equal(scratch[k], state[k]) for k in state if state[k].is_floating_point())


def test_a_training_checkpoint_and_safetensors_load_too(tmp_path):
    from safetensors.torch import save_file

    path, state = _backbone_file(tmp_path)
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pt")
    save_file(state, tmp_path / "w.safetensors")
    for f in ("wrapped.pt", "w.safetensors"):
        backbone = create_backbone("resnet18", str(tmp_path / f), "image_model.pretrained")
        assert all(torch.equal(backbone.state_dict()[k], state[k]) for k in state), f


@pytest.mark.parametrize("case", ["missing", "garbage", "other_names", "other_shapes"])
def test_bad_local_checkpoints_name_the_option_and_the_file(tmp_path, case):
    path = tmp_path / "ckpt.pt"
    if case == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif case == "other_names":
        torch.save({"encoder.weight": torch.zeros(3)}, path)
    elif case == "other_shapes":
        path = _backbone_file(tmp_path, "resnet50")[0]  # same names as resnet18's, other widths
    want = {"missing": "backbone checkpoint file not found", "garbage": "not a readable checkpoint",
            "other_names": "no tensor of the checkpoint matches the backbone's names",
            "other_shapes": "have other shapes than the backbone's"}[case]
    backbone = timm.create_model("resnet18", features_only=True)
    with pytest.raises(ConfigError, match=f"^region_model.pretrained: {path}: .*{want}"):
        load_backbone_weights(backbone, str(path), "region_model.pretrained")
