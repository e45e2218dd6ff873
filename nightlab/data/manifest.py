"""The manifest: one parquet row per sample, the only way later stages find images and labels.

Columns: split, domain (day/night), image, label, instance (nullable), height, width, source
(the dataset's name), encoding (``labelIds`` or ``trainIds``: how the label PNG encodes
classes) and md5 (of the sample's files, read when they were checked). Paths are relative to
their source's root; the roots are stored in the parquet file's metadata (key
``nightlab.roots``, a JSON mapping source -> root).

The md5 column makes the manifest change whenever a file's content changes, even under the
same path: stages that read the files depend on the manifest, so DVC reruns them, and their
checkpoint and cache keys need not hash the files again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nightlab.io import (
    ORIENTATIONS,
    DataError,
    atomic_path,
    decode_image,
    decode_label_map,
    exif_orientation,
    read_bytes,
    read_image,
    read_label,
)
from nightlab.labels import IGNORE, NUM_CLASSES, VALID_LABEL_IDS, label_ids_to_train_ids

COLUMNS = ["split", "domain", "image", "label", "instance", "height", "width", "source", "encoding", "md5"]
ENCODINGS = ("labelIds", "trainIds")
DOMAINS = ("day", "night")
_ROOTS_KEY = b"nightlab.roots"


@dataclass(frozen=True)
class Manifest:
    df: pd.DataFrame
    root: Path | dict  # one root for every source, or {source: root}

    def root_of(self, source: str) -> Path:
        if not isinstance(self.root, dict):
            return Path(self.root)
        if source not in self.root:
            raise DataError(f"manifest has no root for source {source!r} (known: {sorted(self.root)})")
        return Path(self.root[source])

    def file(self, i: int, column: str) -> Path:
        row = self.df.iloc[i]
        return self.root_of(row.source) / row[column]

    def select(self, rows=None, domains=None) -> Manifest:
        """The rows matching any of ``rows`` (RowSelectors, e.g. ``params.splits.select``), and of ``domains``."""
        df = self.df
        if rows is not None:
            keep = [any(r.matches(src, split, dom) for r in rows)
                    for src, split, dom in zip(df.source, df.split, df.domain)]
            df = df[np.asarray(keep, dtype=bool)] if len(df) else df
        if domains is not None and domains != "all":
            domains = [domains] if isinstance(domains, str) else list(domains)
            df = df[df.domain.isin(domains)]
        # ``row`` keeps each sample's position in the full manifest (boxes refer to it).
        if "row" not in df.columns:
            df = df.assign(row=df.index)
        return Manifest(df.reset_index(drop=True), self.root)

    def __len__(self) -> int:
        return len(self.df)

    def image(self, i: int) -> np.ndarray:
        return read_image(self.file(i, "image"))

    def label(self, i: int) -> np.ndarray:
        return decode_label(self.file(i, "label"), self.df.encoding.iat[i])

    def instance(self, i: int) -> np.ndarray | None:
        rel = self.df.instance.iat[i]
        return None if rel is None or pd.isna(rel) else read_label(self.file(i, "instance"), dtype=np.int32)


def decode_label(path: Path, encoding: str, buf: bytes | None = None) -> np.ndarray:
    """Read a label PNG in its dataset's encoding and return trainIds (uint8, 255 = ignore)."""
    raw = read_label(path, dtype=None) if buf is None else decode_label_map(buf, path, dtype=None)
    if raw.dtype != np.uint8:
        raise DataError(f"{path}: label PNG is {raw.dtype}, expected 8-bit")
    if encoding == "labelIds":
        bad = np.setdiff1d(np.unique(raw), np.fromiter(VALID_LABEL_IDS, int))
        if bad.size:
            raise DataError(f"{path}: label values {bad[:10].tolist()} are not Cityscapes labelIds (0..33); "
                            "if the dataset stores trainIds, set its encoding: trainIds")
        return label_ids_to_train_ids(raw)
    if encoding == "trainIds":
        vals = np.unique(raw)
        bad = vals[(vals >= NUM_CLASSES) & (vals != IGNORE)]
        if bad.size:
            raise DataError(f"{path}: label values {bad[:10].tolist()} are not trainIds (0..18 or 255); "
                            "if the dataset stores Cityscapes labelIds, set its encoding: labelIds")
        return raw
    raise DataError(f"{path}: unknown label encoding {encoding!r}; expected one of {ENCODINGS}")


@dataclass(frozen=True)
class CheckedSample:
    height: int
    width: int
    md5: str  # of the image, label and instance files' bytes, in that order
    train_ids: np.ndarray


def check_sample(root: Path, row) -> CheckedSample:
    """Read every file of one manifest row once: hash the bytes, decode, check sizes and values."""
    img_path = root / row["image"]
    h = hashlib.md5()
    buf = read_bytes(img_path, "image file")
    h.update(buf)
    img = decode_image(buf, img_path)
    refuse_rotated(img_path, buf)
    height, width = img.shape[:2]
    train_ids = None
    for key in ("label", "instance"):
        rel = row.get(key)
        if rel is None or pd.isna(rel):
            continue
        path = root / rel
        buf = read_bytes(path, f"{key} file")
        h.update(buf)
        if key == "label":
            lab = train_ids = decode_label(path, row["encoding"], buf)
        else:
            lab = decode_label_map(buf, path, dtype=None)
        if lab.shape[:2] != (height, width):
            raise DataError(f"{path}: {key} size {lab.shape[1]}x{lab.shape[0]} differs from its image "
                            f"{img_path.name} ({width}x{height})")
    if train_ids is None:
        raise DataError(f"{img_path}: no label file for this image")
    return CheckedSample(height, width, h.hexdigest(), train_ids)


def refuse_rotated(path: Path, buf: bytes) -> None:
    """Refuse an image whose EXIF tag says to rotate or mirror it. Images and masks are read as stored,
    but whether its mask was drawn on the stored pixels or on the view a viewer shows cannot be told
    (and guessing wrong trains on labels that do not fit)."""
    orientation = exif_orientation(buf)
    if orientation != 1:
        raise DataError(f"{path}: EXIF orientation {orientation} ({ORIENTATIONS[orientation]}) is not supported: "
                        "write the image upright without the tag (e.g. `mogrify -auto-orient`) and its mask in the "
                        "same frame")


def validate_frame(df: pd.DataFrame, source: str, splits=None) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: manifest lacks columns {missing}")
    for split in splits or []:
        if not (df.split == split).any():
            raise DataError(f"{source}: split {split!r} is empty (no image with a label found)")
    bad_dom = set(df.domain) - set(DOMAINS)
    if bad_dom:
        raise DataError(f"{source}: unknown domains {sorted(bad_dom)}; expected {DOMAINS}")
    dup = df.duplicated(["source", "image"])
    if dup.any():
        raise DataError(f"{source}: {int(dup.sum())} images listed twice, e.g. {df.image[dup].iat[0]}")
    return df[COLUMNS].reset_index(drop=True)


def write_manifest(df: pd.DataFrame, path: str | Path, root: str | Path | dict) -> None:
    """``root``: the data root of every source, or {source: root}."""
    df = validate_frame(df, str(path))
    roots = {str(k): str(v) for k, v in root.items()} if isinstance(root, dict) else {
        s: str(root) for s in sorted(set(df.source))}
    missing = sorted(set(df.source) - set(roots))
    if missing:
        raise DataError(f"{path}: no data root given for sources {missing}")
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_ROOTS_KEY] = json.dumps(roots, sort_keys=True).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_manifest(path: str | Path, root: str | Path | dict | None = None) -> Manifest:
    """The manifest at ``path``; ``root`` (one root for every source, or {source: root}) overrides
    the roots stored in it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run the prepare_data stage first)")
    try:
        table = pq.read_table(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable parquet manifest: {err}") from None
    df = validate_frame(table.to_pandas(), str(path))
    if root is not None:
        return Manifest(df, {k: Path(v) for k, v in root.items()} if isinstance(root, dict) else Path(root))
    stored = (table.schema.metadata or {}).get(_ROOTS_KEY)
    if stored is None:
        raise DataError(f"{path}: manifest has no data roots in its metadata; pass one")
    return Manifest(df, {k: Path(v) for k, v in json.loads(stored).items()})
