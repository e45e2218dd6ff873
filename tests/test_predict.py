"""`nightlab predict`: which files a command line names (files, folders, glob patterns), where their
outputs go (sub-folders mirrored, collisions refused before anything is written), and what is
written (Cityscapes labelIds that decode back to the trainIds, --image-level files), on tiny
random models saved with nightlab.models.store."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label
from conftest import ROOT

from nightlab.config import RdnConfig
from nightlab.hard import read_hard_classes
from nightlab.inference import image_probs
from nightlab.io import DataError, read_image, read_label
from nightlab.labels import CLASS_NAMES, IGNORE, NUM_CLASSES, PALETTE, colorize, label_ids_to_train_ids
from nightlab.models import SegModel
from nightlab.models.rdn import RDN, RpnSettings, rdn_config
from nightlab.models.store import load_image_model, save_model
from nightlab.predict import (
    IMAGE_LEVEL_OUTPUTS,
    OUTPUTS,
    Prediction,
    TwoLevel,
    expand_inputs,
    plan_predictions,
    predict_files,
)
from nightlab.selectors import RegionSelection
from nightlab.trained import TrainedModels
from nightlab_cli.main import main

SEG = {"arch": "seg", "backbone": "test_resnet", "decoder_channels": 8, "light_adaptation": True,
       "num_classes": NUM_CLASSES}


def _png(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """models/{image,region,hdm} (random weights) and a hard-classes file naming every class."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_model(root / "image", SegModel("test_resnet", NUM_CLASSES, 8).eval(), {**SEG, "image_scale": 0.5})
    save_model(root / "region", SegModel("test_resnet", NUM_CLASSES, 8).eval(), {**SEG, "region_size": 32})
    cfg = RdnConfig(backbone="test_resnet", image_scale=0.5, pre_nms_top_n=50, post_nms_top_n=10)
    rdn = RDN(cfg.backbone, (8, 16), RpnSettings.of(cfg)).eval()
    save_model(root / "hdm", rdn, rdn_config(cfg, (8, 16)))
    (root / "hard.json").write_text(json.dumps({"ids": list(range(NUM_CLASSES))}))
    return root


def _two_level(models: Path, hard: Path, max_regions: int = 2, score_thresh: float = 0.0) -> TwoLevel:
    return TwoLevel(TrainedModels.from_dir(models, detectors=("hdm",)), read_hard_classes(hard),
                    RegionSelection(max_regions, 0.5, score_thresh))


def _predict(models: Path, *args) -> int:
    return main(["predict", *map(str, args), "--models", str(models), "--hard", str(models / "hard.json"),
                 "--device", "cpu", "--params", str(ROOT / "params.yaml")])


# ---------------------------------------------------------------- inputs

@pytest.fixture
def city_folder(tmp_path) -> Path:
    """data/night/{aachen,bonn}/... with the same stem in two cities, a jpg, a non-image and a hidden file."""
    root = tmp_path / "data" / "night"
    for rel in ("bonn/b_1.png", "aachen/a_1.png", "aachen/x.png", "bonn/x.JPG", "bonn/deep/c_1.jpeg"):
        _png(root / rel)
    (root / "aachen" / "notes.txt").write_text("not an image")
    _png(root / "aachen" / ".hidden.png")
    return root


def test_folder_expands_recursively_sorted_with_mirrored_relative_paths(city_folder):
    got = [(f.relative_to(city_folder).as_posix(), rel.as_posix()) for f, rel in expand_inputs([city_folder])]
    assert got == [("aachen/a_1.png", "aachen/a_1"), ("aachen/x.png", "aachen/x"), ("bonn/b_1.png", "bonn/b_1"),
                   ("bonn/deep/c_1.jpeg", "bonn/deep/c_1"), ("bonn/x.JPG", "bonn/x")]


def test_glob_patterns_expand_below_their_leading_folder(city_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = [(f.as_posix(), rel.as_posix()) for f, rel in expand_inputs(["data/night/**/*.png"])]
    assert got == [("data/night/aachen/a_1.png", "aachen/a_1"), ("data/night/aachen/x.png", "aachen/x"),
                   ("data/night/bonn/b_1.png", "bonn/b_1")]
    # One level of wildcard; a matched folder is expanded like a folder, below the pattern's base.
    got = [rel.as_posix() for _, rel in expand_inputs(["data/night/*/x.*", "data/night/bo*"])]
    assert got == ["aachen/x", "bonn/x", "bonn/b_1", "bonn/deep/c_1", "bonn/x"]
    # A plain file keeps its stem only.
    assert [rel.as_posix() for _, rel in expand_inputs(["data/night/bonn/b_1.png"])] == ["b_1"]


def test_a_pattern_matching_nothing_or_an_empty_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"nothing/\*\*/\*\.png: the pattern matches no image file"):
        expand_inputs(["nothing/**/*.png"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty: no png/jpg/jpeg image"):
        expand_inputs(["empty"])


def test_outputs_inside_the_input_folder_are_not_inputs(city_folder):
    out = city_folder / "pred"
    _png(out / "aachen" / "a_1_color.png")  # a previous run's output
    plan = plan_predictions([city_folder], out)
    assert all("pred" not in job.source.parts for job in plan) and len(plan) == 5


def test_two_inputs_writing_the_same_file_are_refused_before_anything_is_written(city_folder, tmp_path, models):
    a, b = city_folder / "aachen" / "x.png", city_folder / "bonn" / "x.JPG"
    out = tmp_path / "pred"
    with pytest.raises(DataError) as err:
        plan_predictions([a, b], out)
    msg = str(err.value)
    assert str(out / "x_labelIds.png") in msg and str(a) in msg and str(b) in msg
    # x.png's image-level outputs are x_image_*.png: the same names as x_image.png's two-level outputs.
    x_image = _png(tmp_path / "other" / "x_image.png")
    plan_predictions([a, x_image], out)  # without --image-level: no clash
    with pytest.raises(DataError, match="x_image_trainIds.png"):
        plan_predictions([a, x_image], out, image_level=True)
    # Through the command: exit 2, one error block, nothing written.
    assert _predict(models, a, b, "--out", out) == 2
    assert not out.exists()
    # From their folder the two are mirrored apart (a pattern mirrors below its own leading folder).
    plan = plan_predictions([city_folder, city_folder / "aachen/**/x.png"], out)
    assert sorted(str(j.outputs["trainIds"].relative_to(out)) for j in plan if j.source.stem == "x") == [
        "aachen/x_trainIds.png", "bonn/x_trainIds.png", "x_trainIds.png"]
    # The same file named twice for the same output is predicted once.
    assert len(plan_predictions([city_folder, city_folder], out)) == 5


# ---------------------------------------------------------------- outputs

def test_predict_folder_mirrors_cities_and_writes_every_output(city_folder, tmp_path, models, capsys):
    out = tmp_path / "pred"
    assert _predict(models, city_folder, "--out", out, "--image-level") == 0
    assert "5 of 5 images written" in capsys.readouterr().out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    rels = ["aachen/a_1", "aachen/x", "bonn/b_1", "bonn/deep/c_1", "bonn/x"]
    assert written == sorted(f"{r}_{k}.png" for r in rels for k in OUTPUTS + IMAGE_LEVEL_OUTPUTS)

    image_model, icfg = load_image_model(models / "image")
    for rel in rels:
        train_ids = read_label(out / f"{rel}_trainIds.png")
        assert train_ids.shape == (40, 56) and ((train_ids < NUM_CLASSES) | (train_ids == IGNORE)).all()
        # labelIds decode back to the trainIds through cityscapesscripts' own table.
        label_ids = read_label(out / f"{rel}_labelIds.png")
        back = np.vectorize(lambda i: id2label[int(i)].trainId)(label_ids)
        assert np.array_equal(np.where(back < 0, IGNORE, back), train_ids)
        # The image-level file is the image model alone on the same image.
        src = next(city_folder.glob(f"{rel}.*"))
        expect = image_probs(image_model, read_image(src), icfg["image_scale"], "cpu").argmax(0).byte().numpy()
        assert np.array_equal(read_label(out / f"{rel}_image_trainIds.png"), expect)
        # The colour pictures: the prediction at the top-left, its class legend at the right.
        image_color = read_image(out / f"{rel}_image_color.png")
        assert image_color.shape[1] > 56 and np.array_equal(image_color[:40, :56], colorize(expect))
        assert read_image(out / f"{rel}_overlay.png").shape[1] > 56


def test_predict_glob_without_image_level_and_an_unreadable_file(city_folder, tmp_path, models, capsys):
    (city_folder / "bonn" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "pred"
    assert _predict(models, str(city_folder / "bonn" / "**" / "*.png"), "--out", out) == 1  # one failed
    captured = capsys.readouterr()
    assert "1 of 2 images written" in captured.out and "broken.png" in captured.err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == sorted(f"b_1_{k}.png" for k in OUTPUTS)
    assert not list(out.rglob(".*"))  # no temporary left behind


def test_every_train_id_round_trips_through_the_label_ids_file(tmp_path):
    """All 19 classes and ignore: labelIds on disk -> cityscapesscripts' table -> the same trainIds."""
    merged = np.array([list(range(NUM_CLASSES)) + [IGNORE]] * 3, dtype=np.uint8)
    img = _png(tmp_path / "in.png", *merged.shape)

    def fake(image):  # a stand-in for TwoLevel: any callable image -> Prediction
        return Prediction(image=merged[::-1].copy(), merged=merged, boxes=np.zeros((0, 4)))

    failures = predict_files(plan_predictions([img], tmp_path / "out", image_level=True), fake, progress=False)
    assert failures == []
    label_ids = read_label(tmp_path / "out" / "in_labelIds.png")
    assert sorted(np.unique(label_ids)) == sorted({lab.id for lab in id2label.values() if 0 <= lab.trainId < 19} | {0})
    assert np.array_equal(label_ids_to_train_ids(label_ids), merged)
    assert all(id2label[int(i)].trainId == t for i, t in zip(label_ids[0], merged[0]) if t != IGNORE)
    assert np.array_equal(read_label(tmp_path / "out" / "in_image_trainIds.png"), merged[::-1])


def test_a_shared_backbone_detector_runs_in_the_image_models_pass_with_the_same_result(tmp_path, models):
    from nightlab.models.rdn import SharedBackbone
    from nightlab.models.store import load_seg_model
    image_model, _ = load_seg_model(models / "image")
    cfg = RdnConfig(backbone="shared", image_scale=0.5, pre_nms_top_n=50, post_nms_top_n=10)
    torch.manual_seed(1)
    rdn = RDN(SharedBackbone(image_model, False), (8, 16), RpnSettings.of(cfg)).eval()
    for part in ("image", "region"):
        (tmp_path / part).symlink_to(models / part, target_is_directory=True)
    save_model(tmp_path / "hdm", rdn, rdn_config(cfg, (8, 16), {**SEG, "image_scale": 0.5}))
    two = _two_level(tmp_path, models / "hard.json", max_regions=3)
    assert two.one_pass
    image = read_image(_png(tmp_path / "f.png", 64, 96, seed=3))
    fused = two(image)
    two.one_pass = False  # the same models, the detector in its own pass
    alone = two(image)
    assert len(fused.boxes) == 3
    assert np.array_equal(fused.boxes, alone.boxes) and np.array_equal(fused.merged, alone.merged)
    assert np.array_equal(fused.image, alone.image)
    assert not _two_level(models, models / "hard.json").one_pass  # a detector with its own backbone

    # A sliding window that tiles the scaled image (32x48 here) leaves no whole-image features to share.
    two.one_pass = True
    two.models.window = (32, 48)
    assert not two.models.tiled(image)  # the scaled image fits the window: one pass
    two.models.window = (16, 32)
    assert two.models.tiled(image)
    tiled = two(image)
    two.one_pass = False
    assert np.array_equal(tiled.merged, two(image).merged) and np.array_equal(tiled.boxes, two(image).boxes)


# ---------------------------------------------------------------- predict == evaluate

class _Frames:
    """The manifest interface evaluate_two_level reads: images and (all-ignore) labels."""

    def __init__(self, files):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i):
        return read_image(self.files[i])

    def label(self, i):
        return np.full(self.image(i).shape[:2], IGNORE, np.uint8)


def test_predict_and_the_evaluation_give_the_same_prediction_with_non_default_merge_settings(tmp_path, models):
    """`nightlab predict` and evaluate_two_level (what evaluate_merged reports) zoom into the same regions
    with the same score threshold and K, and give the same prediction pixel for pixel."""
    import pandas as pd

    from nightlab.config import Params
    from nightlab.config.writer import params_yaml
    from nightlab.evaluation import TwoLevelSpec, evaluate_two_level

    files = [_png(tmp_path / "in" / f"f{i}.png", 64, 96, seed=10 + i) for i in range(4)]
    trained = TrainedModels.load(models / "image", "cpu", None, models / "region", {"hdm": models / "hdm"})
    props = trained.propose("hdm", [read_image(f) for f in files])

    def regions(t):
        return [len(RegionSelection(3, 0.5, t).top(b, s)) for b, s in props]
    # a threshold under which K caps some images and the threshold leaves others fewer regions
    thresh = next(t for t in sorted(np.concatenate([s for _, s in props]).round(6))
                  if max(regions(t)) == 3 and min(regions(t)) < 3)
    params = Params().model_copy(update={"merge": Params().merge.model_copy(
        update={"score_thresh": float(thresh), "max_regions": 3, "batch_size": 5})})
    (tmp_path / "params.yaml").write_text(params_yaml(params))

    spec = TwoLevelSpec.of(params)
    assert (spec.selection.max_regions, spec.selection.score_thresh) == (3, thresh)
    hard = read_hard_classes(models / "hard.json")
    gt = pd.DataFrame(columns=["sample", "x0", "y0", "x1", "y1", "area"])
    ev = evaluate_two_level(_Frames(files), gt, trained, hard, spec, keep=("merged_hdm",))
    counts = ev.regions["merged_hdm"]
    assert counts == regions(thresh) and min(counts) < 3

    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "in"), "--out", str(out), "--models", str(models), "--hard",
                 str(models / "hard.json"), "--device", "cpu", "--params", str(tmp_path / "params.yaml")]) == 0
    for f, expected in zip(files, ev.predictions["merged_hdm"]):
        assert np.array_equal(read_label(out / f"{f.stem}_trainIds.png"), expected), f
    # and with the default threshold the regions differ: the setting reached both
    spec0 = TwoLevelSpec(RegionSelection(3, 0.5, 0.0), spec.ks, spec.entropy_threshold, spec.boxes, spec.criterion, 5)
    assert evaluate_two_level(_Frames(files), gt, trained, hard, spec0).regions["merged_hdm"] != counts


# ---------------------------------------------------------------- what a user is told and shown

STREET = Path("/work/shared/fixtures/street_day_1024x512.png")  # a real photo, where the machine has it


def _with_record(models: Path, dest: Path, synthetic) -> Path:
    """A copy of ``models`` whose image model says what it was trained on (as fit_seg_model saves it)."""
    import shutil

    from nightlab.models.store import TRAINED_ON

    shutil.copytree(models, dest)
    cfg = json.loads((dest / "image/config.json").read_text())
    cfg[TRAINED_ON] = {"data.synthetic": synthetic, "data.sources": [], "splits.train": ["*/train/*"]}
    (dest / "image/config.json").write_text(json.dumps(cfg))
    return dest


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_training_params_saved_with_a_trained_model_name_its_data(tmp_path):
    from flows.common import declared_params
    from flows.training import fit_seg_model
    from nightlab.config import load_profile
    from nightlab.config.view import ParamsView
    from nightlab.models.store import TRAINED_ON, load_state

    full = load_profile(ROOT / "profiles/tiny.yaml")
    for stage, section in (("train_image_model", "image_model"), ("train_region_model", "region_model")):
        # through the stage's own params view: only the keys its dvc.yaml entry declares
        p = ParamsView(full, declared_params(stage, ROOT / "dvc.yaml"), stage=stage)
        outputs = (tmp_path / stage, tmp_path / f"{stage}.csv")
        fit_seg_model(p, getattr(p, section), lambda device: None, tmp_path / "ckpt", {}, outputs, stage)
        record = load_state(tmp_path / stage)[1][TRAINED_ON]
        assert record["data.synthetic"]["height"] == 64
        assert record["splits.train"] == [str(s) for s in full.splits.train]


def test_predict_warns_once_when_the_models_were_trained_on_synthetic_data(tmp_path, models, capsys):
    img = _png(tmp_path / "in" / "a.png")
    synthetic = _with_record(models, tmp_path / "synthetic", {"version": 3, "height": 64, "width": 128})
    assert _predict(synthetic, img, "--out", tmp_path / "out") == 0
    warned = _warnings(capsys.readouterr().err)
    assert len(warned) == 1 and "synthetic data only" in warned[0] and "data.synthetic" in warned[0], warned
    real = _with_record(models, tmp_path / "real", None)  # data.synthetic: null
    assert _predict(real, img, "--out", tmp_path / "out2") == 0
    assert _warnings(capsys.readouterr().err) == []
    assert _predict(models, img, "--out", tmp_path / "out3") == 0  # no record: nothing claimed
    assert _warnings(capsys.readouterr().err) == []


def test_models_of_an_older_run_are_judged_by_its_dvc_lock(tmp_path):
    from nightlab.predict import synthetic_warning

    (tmp_path / "models/image").mkdir(parents=True)
    (tmp_path / "models/image/config.json").write_text(json.dumps(SEG))
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  prepare_data:\n    params:\n      params.yaml:\n        data:\n"
                    "          synthetic: {height: 64}\n          sources: {}\n")
    assert "synthetic data only" in synthetic_warning(tmp_path / "models", lock)
    assert synthetic_warning(tmp_path / "models") is None


def test_colour_and_overlay_carry_a_legend_and_each_region_its_score(tmp_path):
    """The legend names every predicted class beside its colour; each drawn region has its score."""
    from nightlab.viz import draw_boxes, legend_entries, overlay

    merged = np.zeros((60, 80), np.uint8)
    merged[:, 40:] = CLASS_NAMES.index("car")
    merged[:10, :10] = CLASS_NAMES.index("pole")
    img = _png(tmp_path / "in.png", *merged.shape)
    boxes, scores = np.array([[20.0, 30, 50, 55]]), np.array([0.87])

    def fake(image):
        return Prediction(image=merged, merged=merged, boxes=boxes, scores=scores)

    assert predict_files(plan_predictions([img], tmp_path / "out"), fake, progress=False) == []
    assert [CLASS_NAMES[c] for c, _ in legend_entries(merged)] == ["car", "road", "pole"]
    color = read_image(tmp_path / "out/in_color.png")
    assert color.shape[1] > 80 and np.array_equal(color[:60, :80], colorize(merged))
    legend = color[:, 80:].reshape(-1, 3)
    for name in ("car", "road", "pole"):  # a swatch of each predicted class's colour
        assert (legend == PALETTE[CLASS_NAMES.index(name)]).all(1).sum() >= 20, name
    assert not (legend == PALETTE[CLASS_NAMES.index("bus")]).all(1).any()
    shown = read_image(tmp_path / "out/in_overlay.png")
    plain = draw_boxes(overlay(read_image(img), merged), boxes)
    with_score = draw_boxes(overlay(read_image(img), merged), boxes, labels=["0.87"])
    assert not np.array_equal(plain, with_score)
    assert np.array_equal(shown[:60, :80], with_score) and shown.shape[1] > 80


def test_two_level_keeps_each_regions_detector_score(tmp_path, models):
    pred = _two_level(models, models / "hard.json", max_regions=3)(read_image(_png(tmp_path / "a.png")))
    assert pred.scores is not None and len(pred.scores) == len(pred.boxes) > 0
    assert ((pred.scores >= 0) & (pred.scores <= 1)).all() and (np.diff(pred.scores) <= 0).all()


def test_predict_on_a_real_street_photo(tmp_path, models, capsys):
    if not STREET.is_file():
        pytest.skip(f"{STREET} not on this machine: the real-photo check did not run")
    synthetic = _with_record(models, tmp_path / "synthetic", {"version": 3})
    assert _predict(synthetic, STREET, "--out", tmp_path / "out") == 0
    assert len(_warnings(capsys.readouterr().err)) == 1
    photo = read_image(STREET)
    for kind in ("color", "overlay"):
        shown = read_image(tmp_path / "out" / f"{STREET.stem}_{kind}.png")
        assert shown.shape[0] >= photo.shape[0] and shown.shape[1] > photo.shape[1], kind
    train_ids = read_label(tmp_path / "out" / f"{STREET.stem}_trainIds.png")
    assert train_ids.shape == photo.shape[:2]


class _Labelled(_Frames):
    """Frames with random valid labels, so crops have pixels to score."""

    def label(self, i):
        h, w = self.image(i).shape[:2]
        return np.random.default_rng(i).integers(0, NUM_CLASSES, (h, w)).astype(np.uint8)


def test_per_image_crop_confusions_add_up_to_the_crop_evaluation(models, tmp_path):
    """crop_confusions (evaluate_merged's paired crop intervals) counts the same pixels, per image, as
    evaluate_on_crops (the region stage's crop table); an image without boxes counts none."""
    import pandas as pd

    from nightlab.evaluation import crop_confusions, evaluate_on_crops
    from nightlab.metrics import iou_from_confusion

    frames = _Labelled([_png(tmp_path / f"f{i}.png", 64, 96, seed=20 + i) for i in range(3)])
    trained = TrainedModels.load(models / "image", "cpu", None, models / "region")
    boxes = pd.DataFrame({"sample": [0, 0, 2], "x0": [0.0, 30.0, 10.0], "y0": [0.0, 10.0, 5.0],
                          "x1": [40.0, 90.0, 50.0], "y1": [30.0, 60.0, 40.0]})
    region, image = crop_confusions(trained, frames, boxes, 4)
    assert region.shape == (3, NUM_CLASSES, NUM_CLASSES) and region[1].sum() == 0 == image[1].sum()
    assert region[0].sum() == image[0].sum() == 40 * 30 + 60 * 50
    res_r, res_i = evaluate_on_crops(trained, frames, boxes, 4)
    np.testing.assert_allclose(iou_from_confusion(region.sum(0)), res_r["iou"], equal_nan=True)
    np.testing.assert_allclose(iou_from_confusion(image.sum(0)), res_i["iou"], equal_nan=True)


def test_the_runtime_benchmark_times_every_view_shape_of_rectangular_views(tmp_path, models, monkeypatch):
    """benches.runtimes feeds the region model each image's views batch by batch: rectangular views come
    in several input shapes (a square box and a long lying one here), which one tensor cannot hold."""
    from types import SimpleNamespace

    from benches import runtimes
    from nightlab.inference import region_inputs

    for name in ("image", "hdm"):
        (tmp_path / name).symlink_to(models / name)
    save_model(tmp_path / "region", SegModel("test_resnet", NUM_CLASSES, 8).eval(),
               {**SEG, "region_size": 32, "crop": "rect", "max_zoom": 2.0, "min_scale": 0.5})
    two = _two_level(tmp_path, models / "hard.json")
    boxes = np.array([[8, 8, 40, 40], [0, 44, 128, 60]], dtype=float)  # 1:1 standing, 8:1 lying
    monkeypatch.setattr(two, "first_level", lambda image: SimpleNamespace(boxes=boxes))
    images = [np.random.default_rng(s).integers(0, 255, (64, 128, 3), dtype=np.uint8) for s in (0, 1)]
    batches = region_inputs(images[0], boxes, two.models.rule)
    assert len({b[0].shape for b in batches}) >= 2  # the case under test

    settings = ("eager", "channels_last", "1 thread")  # not torch.compile: its compile takes a minute here
    out = runtimes.measure(two, images, repeat=1, settings=settings)

    assert set(out["median_s"]) == {f"{p}.{s}" for p in ("image", "region") for s in settings}
    assert all(v > 0 for v in out["median_s"].values())
    assert out["region_views"] == sum(len(b[0]) for b in batches)
