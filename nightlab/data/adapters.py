"""Real-dataset adapters: each scans a dataset's own on-disk layout into manifest rows.

Labels stay in the dataset's encoding (the ``encoding`` column says which); conversion to
trainIds happens on read via cityscapesscripts' table. Adapters only pair files: decoding and
size checks are :func:`nightlab.data.manifest.check_sample`'s job.

Layouts (images -> labels, per split):

- cityscapes: leftImg8bit/{split}/{city}/*_leftImg8bit.png -> gtFine/{split}/{city}/*_gtFine_labelIds.png
  (+ *_instanceIds.png; *_labelTrainIds.png with encoding trainIds)
- nightcity: images/{split}/*.png -> label/{split}/*_labelIds.png
- acdc: rgb_anon/night/{split}/{seq}/*_rgb_anon.png -> gt/night/{split}/{seq}/*_gt_labelIds.png
- darkzurich: rgb_anon/{split}/night/{seq}/*_rgb_anon.png -> gt/{split}/night/{seq}/*_gt_labelIds.png
- bdd100k: images/10k/{split}/*.jpg -> labels/sem_seg/masks/{split}/*.png (trainIds)
- folder: images/{split}/*.(png|jpg) -> masks/{split}/<same stem>.png (trainIds or labelIds)
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from nightlab.io import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def _row(root: Path, split, domain, image: Path, label: Path, instance: Path | None, source, encoding) -> dict:
    return dict(split=split, domain=domain, image=str(image.relative_to(root)), label=str(label.relative_to(root)),
                instance=None if instance is None else str(instance.relative_to(root)),
                height=-1, width=-1, source=source, encoding=encoding)


MAX_LISTED = 20  # images without a label named in one error


def _pair(root: Path, images: list[Path], label_for: Callable[[Path], Path], split: str, domain,
          source: str, encoding: str, instance_for: Callable[[Path], Path] | None = None) -> list[dict]:
    rows, unlabelled = [], []
    for img in sorted(images):
        lab = label_for(img)
        if not lab.is_file():
            unlabelled.append(f"  {img}: image has no label (expected {lab})")
            continue
        inst = instance_for(img) if instance_for else None
        dom = domain(img) if callable(domain) else domain
        inst = inst if inst is not None and inst.is_file() else None
        rows.append(_row(root, split, dom, img, lab, inst, source, encoding))
    if unlabelled:
        more = f" (first {MAX_LISTED} shown)" if len(unlabelled) > MAX_LISTED else ""
        raise DataError(f"{len(unlabelled)} image(s) without a label in split {split!r}{more}:\n"
                        + "\n".join(unlabelled[:MAX_LISTED]))
    return rows


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} directory not found{_found_beside(path)}")
    return path


def _found_beside(path: Path) -> str:
    """The folders there are instead (a split spelled another way), when the parent exists."""
    if not path.parent.is_dir():
        return ""
    found = sorted(p.name for p in path.parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    return f" (found there: {', '.join(found)})" if found else ""


def _images(folder: Path, suffix: str = "") -> list[Path]:
    """Image files under ``folder``, following symlinked folders (a city or sequence linked in from
    elsewhere is part of the dataset) but never the same folder twice (a link loop)."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if f.endswith(suffix) and Path(f).suffix.lower() in IMAGE_EXTS and (Path(dirpath) / f).is_file()]
    return found


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


def scan(kind: str, root: str | Path, splits, encoding: str = "auto", domain: str = "auto",
         name: str | None = None) -> pd.DataFrame:
    """Scan a dataset into a manifest frame (height, width and md5 are filled when the files are
    checked). ``name`` goes into the source column (default: the kind). Every split must exist and
    hold at least one image with its label."""
    if kind not in ADAPTERS:
        raise DataError(f"unknown dataset kind {kind!r}; expected one of {sorted(ADAPTERS)}")
    root = Path(root)
    what = f"source {name!r} ({kind})" if name and name != kind else f"kind {kind!r}"
    if not root.is_dir():
        raise DataError(f"{root}: dataset root of {what} not found")
    if len(set(splits)) != len(splits) or not splits:
        raise DataError(f"{root}: splits {list(splits)} of {what} must be a non-empty list without repeats")
    rows = []
    for split in splits:
        found = ADAPTERS[kind](root, split, **({"encoding": encoding} if encoding not in (None, "auto") else {}))
        if not found:
            raise DataError(f"{root}: split {split!r} of {what} is empty (no images found)")
        rows += found
    df = pd.DataFrame(rows)
    df["source"] = name or kind
    df["md5"] = None
    if domain != "auto":
        df["domain"] = domain
    return df
