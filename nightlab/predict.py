"""The full two-level model for inference: image model, HDM (or RDN) boxes, region model, merge;
and ``nightlab predict``'s files: which images a command line names and what is written for each."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nightlab.hard import read_hard_classes
from nightlab.inference import class_map, native_probs
from nightlab.io import DataError
from nightlab.merge import PASTE, MergeRule, merge
from nightlab.selectors import RegionSelection
from nightlab.trained import TrainedModels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Per image: <stem>_<suffix>.png. labelIds is the Cityscapes benchmark server's format.
OUTPUTS = ("labelIds", "trainIds", "color", "overlay")
IMAGE_LEVEL_OUTPUTS = ("image_trainIds", "image_color")  # with --image-level: the image model alone


@dataclass
class Prediction:
    image: np.ndarray  # (H, W) uint8 trainIds, image level
    merged: np.ndarray  # (H, W) uint8 trainIds, two-level
    boxes: np.ndarray  # (R, 4) regions used, native pixels
    scores: np.ndarray | None = None  # (R,) the detector's score of each region (objectness probability)


@dataclass
class FirstLevel:
    """The image level of one image: its logits (1, C, h, w) at the model's scale, its softmax (C, H, W)
    and class map (H, W) at native size, and the regions the detector gives the second level (R, 4)."""
    logits: torch.Tensor
    probs: torch.Tensor
    pred: torch.Tensor
    boxes: np.ndarray
    scores: np.ndarray | None = None  # (R,) the detector's score of each box


class TwoLevel:
    """Two-level prediction of one image: the image model, the regions a detector proposes
    (``selection``), the region model on them, and the merge (``rule``). ``evaluate_two_level`` measures
    exactly this (the same TrainedModels, selection, rule and batch size give the same prediction, pixel
    for pixel)."""

    def __init__(self, models: TrainedModels, hard_ids, selection: RegionSelection, detector: str = "hdm",
                 batch_size: int = 32, rule: MergeRule = PASTE):
        self.models, self.hard, self.selection = models, list(hard_ids), selection
        self.detector, self.batch_size, self.rule = detector, batch_size, rule
        # A detector of this very image model's backbone, at its scale: one backbone pass for both.
        self.one_pass = models.one_pass(detector)

    @classmethod
    def from_params(cls, params, models_dir: str | Path, hard: str | Path, detector: str = "hdm",
                    device="cpu") -> TwoLevel:
        """The system under ``models_dir`` with the merge settings and the image model's sliding window of
        ``params`` (merge, image_model.window) and the hard classes of ``hard`` (a hard-classes JSON)."""
        models = TrainedModels.from_dir(models_dir, device, params.image_model.window, detectors=(detector,))
        return cls(models, read_hard_classes(hard), RegionSelection.of(params.merge), detector,
                   params.merge.batch_size, MergeRule.of(params.merge))

    def first_level(self, image: np.ndarray) -> FirstLevel:
        """The image level and the regions to zoom into (native pixels): one backbone pass for both when
        the detector shares the image model's backbone."""
        if not self.hard or self.selection.max_regions == 0:
            logits, boxes, scores = self.models.image_logits(image), np.zeros((0, 4)), np.zeros(0)
        else:
            logits, (boxes, scores) = self.models.first_level(image, self.detector, fuse=self.one_pass)
            boxes, scores = self.selection.top_scored(boxes, scores)
        probs = native_probs(logits, *image.shape[:2])
        return FirstLevel(logits, probs, class_map(probs), boxes, scores)

    def second_level(self, image: np.ndarray, first: FirstLevel, boxes=None) -> torch.Tensor:
        """The image level's class map with the region model's prediction of ``boxes`` (default: the
        first level's) merged in: (H, W)."""
        boxes = first.boxes if boxes is None else boxes
        if len(boxes) == 0 or not self.hard:
            return first.pred
        regions = self.models.region_probs(image, boxes, self.batch_size, first.logits)
        return merge(first.pred, zip(boxes, regions), self.hard, self.rule, first.probs)[0]

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> Prediction:
        first = self.first_level(image)
        merged = self.second_level(image, first)
        return Prediction(first.pred.byte().cpu().numpy(), merged.byte().cpu().numpy(), first.boxes, first.scores)


# ---------------------------------------------------------------------------- what the models know

def trained_on(models_dir: str | Path, lock: str | Path | None = None) -> dict | None:
    """The data params the image model under ``models_dir`` was trained with (nightlab.models.store
    .training_data, saved in ``image/config.json``). Models saved before the record existed: from
    ``lock``, the dvc.lock of the project whose ``models/`` they are (its prepare_data's ``data``
    params), when given; else None (unknown)."""
    from nightlab.io import read_json
    from nightlab.models.store import TRAINED_ON

    cfg_file = Path(models_dir) / "image" / "config.json"
    cfg = read_json(cfg_file) if cfg_file.is_file() else {}
    if TRAINED_ON in cfg:
        return cfg[TRAINED_ON]
    if cfg.get("arch") == "torchscript" or "external" in cfg or lock is None or not Path(lock).is_file():
        return None  # the user's own model: trained elsewhere
    import yaml

    try:
        params = yaml.safe_load(Path(lock).read_text())["stages"]["prepare_data"]["params"]["params.yaml"]
        data = params["data"] if "data" in params else {"synthetic": params["data.synthetic"]}
    except (KeyError, TypeError, yaml.YAMLError):
        return None
    return {"data.synthetic": data.get("synthetic"), "data.sources": sorted(data.get("sources") or {})}


def synthetic_warning(models_dir: str | Path, lock: str | Path | None = None) -> str | None:
    """One line for ``nightlab predict`` when the image model was trained on the synthetic night city
    (``data.synthetic`` set): on a real photo its confident colours mean little."""
    record = trained_on(models_dir, lock)
    if not record or not record.get("data.synthetic"):
        return None
    sources = record.get("data.sources") or []
    what = (f"synthetic data and {', '.join(sources)}" if sources else "synthetic data only")
    return (f"warning: the models in {models_dir} were trained on {what} (data.synthetic is set): on real "
            "photos expect confident nonsense; train on a real dataset first (README: Real datasets)")


# ---------------------------------------------------------------------------- input files

def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def _pattern_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading components without wildcards."""
    parts = Path(pattern).parts
    lead = []
    for part in parts[:-1]:
        if _is_pattern(part):
            break
        lead.append(part)
    return Path(*lead) if lead else Path(".")


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _under(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def images_under(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Every png/jpg/jpeg file under ``folder`` (recursively, hidden ones left out), sorted."""
    found = [f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
             and not _hidden(f.relative_to(folder)) and not _under(f, exclude)]
    return sorted(found)


def _relative(path: Path, base: Path) -> Path:
    rel = Path(os.path.relpath(path, base))
    return rel if ".." not in rel.parts else Path(path.name)


def expand_inputs(args, exclude: str | Path | None = None) -> list[tuple[Path, Path]]:
    """The image files a command line names, each with its output path relative to the output folder
    (without suffix): ``[(file, rel)]`` in the order given.

    * a file: itself, ``rel`` = its stem (a missing or unreadable file is reported when it is read);
    * a folder: every png/jpg/jpeg under it, recursively and sorted; ``rel`` mirrors its sub-folders;
    * a glob pattern (``*``, ``?``, ``[``; ``**`` spans folders): its matches, sorted, with ``rel``
      mirrored below the pattern's leading folder; a matched folder counts as a folder.

    Files under ``exclude`` (the output folder) are left out of folders and patterns, so that a rerun
    does not predict on its own outputs. A folder without images or a pattern matching no file is a
    DataError naming it.
    """
    exclude = Path(exclude).resolve() if exclude is not None else None
    out: list[tuple[Path, Path]] = []
    for arg in map(str, args):
        path = Path(arg)
        if _is_pattern(arg) and not path.exists():
            base, found = _pattern_base(arg), []
            for match in sorted(glob.glob(arg, recursive=True)):
                m = Path(match)
                if m.is_dir():
                    found += [(f, _relative(f, base)) for f in images_under(m, exclude)]
                elif m.is_file() and not _under(m, exclude):
                    found.append((m, _relative(m, base)))
            if not found:
                raise DataError(f"{arg}: the pattern matches no image file")
            out += found
        elif path.is_dir():
            files = images_under(path, exclude)
            if not files:
                raise DataError(f"{arg}: no png/jpg/jpeg image in this folder or below")
            out += [(f, f.relative_to(path)) for f in files]
        else:
            out.append((path, Path(path.name)))
    return [(f, rel.parent / Path(rel.name).stem) for f, rel in out]


@dataclass
class PredictJob:
    source: Path
    outputs: dict[str, Path]  # output kind (OUTPUTS, IMAGE_LEVEL_OUTPUTS) -> file


def plan_predictions(args, out_dir: str | Path, image_level: bool = False) -> list[PredictJob]:
    """What ``nightlab predict`` will read and write (:func:`expand_inputs`), checked before anything is
    written: two different inputs that would write the same file are a DataError naming both."""
    out_dir = Path(out_dir)
    kinds = OUTPUTS + (IMAGE_LEVEL_OUTPUTS if image_level else ())
    jobs, owner, seen, clashes = [], {}, set(), {}
    for src, rel in expand_inputs(args, exclude=out_dir):
        key = (os.path.normcase(os.path.abspath(src)), rel)
        if key in seen:  # the same file named twice for the same output: predicted once
            continue
        seen.add(key)
        outputs = {k: out_dir / rel.parent / f"{rel.name}_{k}.png" for k in kinds}
        for path in outputs.values():
            first = owner.setdefault(os.path.normcase(os.path.normpath(path)), src)
            if first != src:  # one line per pair of inputs, naming the first file they share
                clashes.setdefault((first, src), f"  {first} and {src} both write {path}")
        jobs.append(PredictJob(src, outputs))
    if clashes:
        clashes = list(clashes.values())
        more = f"\n  ... and {len(clashes) - 10} more" if len(clashes) > 10 else ""
        raise DataError("inputs would overwrite each other's outputs (nothing was written):\n"
                        + "\n".join(clashes[:10]) + more + "\ngive such files from their folders (sub-folders "
                        "are mirrored under --out) or predict them in separate runs")
    return jobs


def predict_files(jobs: list[PredictJob], two_level: TwoLevel, log=None, progress: bool = True
                  ) -> list[tuple[str, str]]:
    """Two-level prediction for each planned image (:func:`plan_predictions`), with a progress bar:
    ``<stem>_labelIds.png`` (Cityscapes labelIds), ``_trainIds.png``, ``_color.png``, ``_overlay.png``
    (with the regions drawn, each with its detector score; the colour images with a legend of the
    classes predicted, at their right: nightlab.viz.with_legend) and, when planned, the image level
    alone (``_image_trainIds.png``, ``_image_color.png``). Every file is written under a temporary name
    and renamed when complete.

    An unreadable file is reported (``log``, default: above the progress bar) and skipped; returns the
    (path, problem) failures.
    """
    from tqdm import tqdm

    from nightlab.io import read_image, write_image, write_label

    log = log or tqdm.write
    failures = []
    bar = tqdm(jobs, desc="predict", unit="image", dynamic_ncols=True, disable=not progress)
    for job in bar:
        try:
            image = read_image(job.source)
        except DataError as err:
            failures.append((str(job.source), str(err)))
            log(f"skipped: {err}")
            continue
        pred = two_level(image)
        for kind, path in job.outputs.items():
            data = _rendered(kind, image, pred)
            (write_label if data.ndim == 2 else write_image)(path, data)
        bar.set_postfix(regions=len(pred.boxes))
    return failures


def _rendered(kind: str, image: np.ndarray, pred: Prediction) -> np.ndarray:
    """One output of :data:`OUTPUTS` or :data:`IMAGE_LEVEL_OUTPUTS`: a label map (H, W) or RGB (H, W, 3)."""
    from nightlab.labels import colorize, train_ids_to_label_ids
    from nightlab.viz import draw_boxes, overlay, with_legend

    if kind == "labelIds":
        return train_ids_to_label_ids(pred.merged)
    if kind == "trainIds":
        return pred.merged
    if kind == "color":
        return with_legend(colorize(pred.merged), pred.merged)
    if kind == "overlay":
        scores = None if pred.scores is None else [f"{s:.2f}" for s in pred.scores]
        return with_legend(draw_boxes(overlay(image, pred.merged), pred.boxes, labels=scores), pred.merged,
                           regions=len(pred.boxes))
    if kind == "image_trainIds":
        return pred.image
    if kind == "image_color":
        return with_legend(colorize(pred.image), pred.image)
    raise ValueError(f"unknown output kind {kind!r}")
