"""Every mistake a user can make ends in one ``error:`` block and exit code 2, never a traceback
(docs/design.md 2.3): a GPU asked for where there is none, memory too small for the batch asked
for, a model file that is truncated or from another run, a backbone the RDN cannot use, a busy
machine where Prefect's temporary server starts too slowly, a hand-edited dvc.yaml."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from scaffold import copy_project

from flows.common import stage_inputs, stage_main
from nightlab.device import pick_device
from nightlab.errors import ConfigError, DataError, UserError, as_user_error
from nightlab.labels import NUM_CLASSES
from nightlab.models import SegModel
from nightlab.models.rdn import RDN, RpnSettings
from nightlab.models.store import load_seg_model, save_model
from nightlab_cli.main import main

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is not a mistake here")
SEG = {"arch": "seg", "backbone": "test_resnet", "decoder_channels": 8, "light_adaptation": True,
       "num_classes": NUM_CLASSES}


def _one_block(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    assert err.count("error:") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


@NO_GPU
def test_cuda_without_a_gpu_is_a_config_error_naming_the_option():
    with pytest.raises(ConfigError, match="device: cuda: no GPU"):
        pick_device("cuda")
    with pytest.raises(ConfigError, match="--device: cuda"):
        pick_device("cuda", "--device")


@NO_GPU
def test_predict_with_device_cuda_without_a_gpu(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), "--device", "cuda",
                 "--params", str(ROOT / "params.yaml")]) == 2
    _one_block(capsys.readouterr().err, "--device: cuda: no GPU")


@NO_GPU
@pytest.mark.e2e
def test_a_stage_with_device_cuda_without_a_gpu(tmp_path, stage_env):
    proj = copy_project(tmp_path / "proj", changes={"device": "cuda"})
    res = subprocess.run([sys.executable, "-m", "flows.train_image_model"], cwd=proj, env=stage_env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2, res.stderr[-3000:]
    _one_block(res.stderr, "device: cuda: no GPU")


def test_out_of_memory_is_a_user_error_with_what_to_lower():
    with pytest.raises(RuntimeError) as real:
        torch.empty(2**50, dtype=torch.uint8)  # what torch's CPU allocator raises when memory runs out
    user = as_user_error(real.value, "stage train_region_model")
    assert isinstance(user, UserError)
    assert "out of memory in stage train_region_model" in str(user) and "batch_size" in str(user)
    assert as_user_error(MemoryError()) is not None
    assert as_user_error(RuntimeError("shape mismatch")) is None  # a bug keeps its traceback
    assert as_user_error(KeyError("x")) is None


def test_out_of_memory_in_a_command_is_one_block(tmp_path, monkeypatch, capsys):
    import nightlab_cli.main as cli

    def boom(args):
        torch.empty(2**50, dtype=torch.uint8)

    monkeypatch.setattr(cli, "cmd_params", boom)
    monkeypatch.setattr(cli, "COMMANDS", [c if c.name != "params" else cli.Command(c.name, c.help, boom, c.args)
                                          for c in cli.COMMANDS])
    assert main(["params", "--out", str(tmp_path / "p.yaml")]) == 2
    _one_block(capsys.readouterr().err, "out of memory in nightlab params", "can't allocate memory")


def test_a_killed_data_loader_worker_says_what_to_change():
    err = RuntimeError("DataLoader worker (pid 123) is killed by signal: Bus error. It is possible that "
                       "dataloader's workers are out of shared memory.")
    user = as_user_error(err, "stage train_image_model")
    assert user is not None and "train.workers: 0" in str(user) and "/dev/shm" in str(user)


def test_an_os_error_without_a_path_says_so():
    assert "named no file" in str(as_user_error(OSError(28, "No space left on device")))
    assert str(as_user_error(FileNotFoundError(2, "No such file or directory", "x.png"))).startswith("x.png: ")


def test_a_full_disk_names_the_output_being_written(tmp_path, monkeypatch):
    """A failed write names no file (the OS gives only ENOSPC): the message names the output, never a
    temporary's name, written directly or as a stage's output."""
    import errno

    import pandas as pd

    from flows.common import StageOutputs
    from nightlab.io import write_json, write_table

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    final = tmp_path / "reports" / "table.csv"
    with pytest.raises(OSError) as exc:
        write_table(pd.DataFrame({"a": [1]}), csv=final)
    assert str(as_user_error(exc.value)) == f"{final}: No space left on device"
    with pytest.raises(OSError) as exc, StageOutputs() as out:
        write_json(out(tmp_path / "done.json"), {})
        write_table(pd.DataFrame({"a": [1]}), csv=out(tmp_path / "reports", directory=True) / "table.csv")
    assert str(as_user_error(exc.value)) == f"{final}: No space left on device"
    assert not (tmp_path / "done.json").exists() and not [p for p in tmp_path.iterdir() if ".stage-" in p.name]
    assert str(as_user_error(OSError(errno.ENOSPC, "No space left on device"))).startswith("(the operating")


def test_a_truncated_or_foreign_model_file_names_it(tmp_path, capsys):
    torch.manual_seed(0)
    save_model(tmp_path / "image", SegModel("test_resnet", NUM_CLASSES, 8), {**SEG, "image_scale": 0.5})
    (tmp_path / "region").mkdir()
    weights = tmp_path / "image" / "model.pt"
    other = tmp_path / "other"
    save_model(other, SegModel("test_resnet", NUM_CLASSES, 16), {**SEG, "decoder_channels": 16})
    (tmp_path / "region" / "model.pt").write_bytes((other / "model.pt").read_bytes())  # weights of another net
    (tmp_path / "region" / "config.json").write_text(json.dumps({**SEG, "region_size": 32}))
    with pytest.raises(DataError, match="does not fit the network config.json describes"):
        load_seg_model(tmp_path / "region")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"image/model.pt: not a readable model file"):
        load_seg_model(tmp_path / "image")
    (tmp_path / "img.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "img.png"), "--out", str(tmp_path / "out"), "--models", str(tmp_path),
                 "--device", "cpu", "--params", str(ROOT / "params.yaml")]) == 2
    _one_block(capsys.readouterr().err, "model.pt: not a readable model file")


def test_an_rdn_backbone_without_stride_8_features_is_a_config_error():
    with pytest.raises(ConfigError, match="rdn.backbone: .* no stride-8 features"):
        RDN("vit_tiny_patch16_224", (16, 32), RpnSettings())


def test_a_slow_temporary_prefect_server_is_one_block(monkeypatch, capsys, tmp_path):
    from flows import select_hard_classes as stage

    class Slow:
        def with_options(self, **_):
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")

        fn = stage.select_hard_classes.fn

    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    with pytest.raises(SystemExit) as exit_:
        stage_main(Slow(), "test", ["--params", str(params)])
    assert exit_.value.code == 2
    _one_block(capsys.readouterr().err, "ephemeral", "PREFECT_API_URL")


def test_a_hand_edited_dvc_yaml_that_drops_the_manifest_is_a_config_error(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages:\n  train_rdn:\n    cmd: x\n    deps: [data/prepared]\n")
    with pytest.raises(ConfigError, match="nightlab dvc-yaml"):
        stage_inputs("train_rdn", tmp_path / "dvc.yaml")


def test_a_stage_lock_is_held_once_and_names_its_file_and_holder(tmp_path, monkeypatch):
    from flows.common import stage_lock

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: x\n    outs: [{data/out.parquet: {persist: true}}]\n"
                                       "  none:\n    cmd: y\n")
    with stage_lock("s"):
        with pytest.raises(UserError) as exc, stage_lock("s"):
            pass
        assert str(exc.value).startswith(f"data/.s.stage-lock: another run of stage s holds this lock (pid "
                                         f"{__import__('os').getpid()} on ")
    with stage_lock("s"), stage_lock("none"):  # free again; a stage without outputs takes no lock
        pass
