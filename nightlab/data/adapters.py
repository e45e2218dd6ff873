"""Real-dataset adapters: each scans a dataset's own on-disk layout into manifest rows.

Labels stay in the dataset's encoding (the ``encoding`` column says which); conversion to
trainIds happens on read via cityscapesscripts' table. Adapters only pair files: decoding and
size checks are :func:`nightlab.data.manifest.check_sample`'s job.

| kind       | images                                               | labels                                             |
|------------|------------------------------------------------------|----------------------------------------------------|
| cityscapes | leftImg8bit/{split}/{city}/*_leftImg8bit.png          | gtFine/{split}/{city}/*_gtFine_labelIds.png (+instanceIds; *_labelTrainIds.png for encoding trainIds) |
| nightcity  | images/{split}/*.png                                 | label/{split}/*_labelIds.png                        |
| acdc       | rgb_anon/night/{split}/{seq}/*_rgb_anon.png           | gt/night/{split}/{seq}/*_gt_labelIds.png            |
| darkzurich | rgb_anon/{split}/night/{seq}/*_rgb_anon.png           | gt/{split}/night/{seq}/*_gt_labelIds.png            |
| bdd100k    | images/10k/{split}/*.jpg                             | labels/sem_seg/masks/{split}/*.png (trainIds)       |
| folder     | images/{split}/*.(png/jpg)                           | masks/{split}/<same stem>.png (trainIds or labelIds) |
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from nightlab.io import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def _row(root: Path, split, domain, image: Path, label: Path, instance: Path | None, source, encoding) -> dict:
    return dict(split=split, domain=domain, image=str(image.relative_to(root)), label=str(label.relative_to(root)),
                instance=None if instance is None else str(instance.relative_to(root)),
                height=-1, width=-1, source=source, encoding=encoding)


def _pair(root: Path, images: list[Path], label_for: Callable[[Path], Path], split: str, domain,
          source: str, encoding: str, instance_for: Callable[[Path], Path] | None = None) -> list[dict]:
    rows = []
    for img in sorted(images):
        lab = label_for(img)
        if not lab.is_file():
            raise DataError(f"{img}: image has no label (expected {lab})")
        inst = instance_for(img) if instance_for else None
        dom = domain(img) if callable(domain) else domain
        rows.append(_row(root, split, dom, img, lab, inst if inst is not None and inst.is_file() else None, source, encoding))
    return rows


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} directory not found")
    return path


def _images(folder: Path, suffix: str = "") -> list[Path]:
    return [p for p in folder.rglob(f"*{suffix}") if p.suffix.lower() in IMAGE_EXTS and p.is_file()]


def scan_cityscapes(root: Path, split: str, encoding: str = "labelIds") -> list[dict]:
    """Cityscapes layout; a city folder named ``night`` or ``day`` sets the domain (the synthetic set uses this)."""
    img_dir = _need_dir(root / "leftImg8bit" / split, "Cityscapes leftImg8bit split")

    def gt(img: Path, kind: str) -> Path:
        stem = img.name.replace("_leftImg8bit.png", "")
        return root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_{kind}.png"

    def domain(img: Path) -> str:
        return img.parent.name if img.parent.name in ("day", "night") else "day"

    label_kind = "labelTrainIds" if encoding == "trainIds" else "labelIds"  # createTrainIdLabelImgs output
    return _pair(root, _images(img_dir, "_leftImg8bit.png"), lambda p: gt(p, label_kind), split, domain,
                 "cityscapes", encoding, instance_for=lambda p: gt(p, "instanceIds"))


def scan_nightcity(root: Path, split: str, encoding: str = "labelIds") -> list[dict]:
    img_dir = _need_dir(root / "images" / split, "NightCity images split")
    label = lambda p: root / "label" / split / p.relative_to(img_dir).parent / f"{p.stem}_labelIds.png"  # noqa: E731
    return _pair(root, _images(img_dir), label, split, "night", "nightcity", "labelIds")


def scan_acdc(root: Path, split: str, encoding: str = "labelIds") -> list[dict]:
    img_dir = _need_dir(root / "rgb_anon" / "night" / split, "ACDC rgb_anon/night split")

    def label(p: Path) -> Path:
        rel = p.relative_to(img_dir).parent
        return root / "gt" / "night" / split / rel / p.name.replace("_rgb_anon.png", "_gt_labelIds.png")

    return _pair(root, _images(img_dir, "_rgb_anon.png"), label, split, "night", "acdc", "labelIds")


def scan_darkzurich(root: Path, split: str, encoding: str = "labelIds") -> list[dict]:
    img_dir = _need_dir(root / "rgb_anon" / split / "night", "Dark Zurich rgb_anon/{split}/night")

    def label(p: Path) -> Path:
        rel = p.relative_to(img_dir).parent
        return root / "gt" / split / "night" / rel / p.name.replace("_rgb_anon.png", "_gt_labelIds.png")

    return _pair(root, _images(img_dir, "_rgb_anon.png"), label, split, "night", "darkzurich", "labelIds")


def scan_bdd100k(root: Path, split: str, encoding: str = "trainIds") -> list[dict]:
    img_dir = _need_dir(root / "images" / "10k" / split, "BDD100K images/10k split")
    label = lambda p: root / "labels" / "sem_seg" / "masks" / split / f"{p.stem}.png"  # noqa: E731
    return _pair(root, _images(img_dir), label, split, "day", "bdd100k", "trainIds")


def scan_folder(root: Path, split: str, encoding: str = "trainIds") -> list[dict]:
    img_dir = _need_dir(root / "images" / split, "images split")
    label = lambda p: root / "masks" / split / p.relative_to(img_dir).parent / f"{p.stem}.png"  # noqa: E731

    def domain(img: Path) -> str:  # a path component named day/night sets the domain; default night
        return "day" if "day" in img.relative_to(img_dir).parts[:-1] else "night"

    return _pair(root, _images(img_dir), label, split, domain, "folder", encoding)


ADAPTERS: dict[str, Callable[..., list[dict]]] = {
    "cityscapes": scan_cityscapes, "nightcity": scan_nightcity, "acdc": scan_acdc,
    "darkzurich": scan_darkzurich, "bdd100k": scan_bdd100k, "folder": scan_folder,
}


def scan(kind: str, root: str | Path, splits, encoding: str = "auto", domain: str = "auto") -> pd.DataFrame:
    """Scan a dataset into a manifest frame (height/width filled later by validation)."""
    if kind not in ADAPTERS:
        raise DataError(f"unknown dataset kind {kind!r}; expected one of {sorted(ADAPTERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset path not found (data.root for kind {kind!r})")
    rows = []
    for split in splits:
        found = ADAPTERS[kind](root, split, **({"encoding": encoding} if encoding not in (None, "auto") else {}))
        if not found:
            raise DataError(f"{root}: split {split!r} is empty (no {kind} images found)")
        rows += found
    df = pd.DataFrame(rows)
    if domain != "auto":
        df["domain"] = domain
    return df
