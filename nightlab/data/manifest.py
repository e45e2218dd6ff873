"""The manifest: one parquet row per sample, the only way later stages find images and labels.

Columns: split, domain (day/night), image, label, instance (nullable), height, width, source,
encoding (``labelIds`` or ``trainIds``: how the label PNG encodes classes). Paths are relative
to the data root, which is stored in the parquet file's metadata (key ``nightlab.root``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nightlab.io import DataError, atomic_path, read_image, read_label
from nightlab.labels import IGNORE, NUM_CLASSES, VALID_LABEL_IDS, label_ids_to_train_ids

COLUMNS = ["split", "domain", "image", "label", "instance", "height", "width", "source", "encoding"]
ENCODINGS = ("labelIds", "trainIds")
DOMAINS = ("day", "night")
_ROOT_KEY = b"nightlab.root"


@dataclass(frozen=True)
class Manifest:
    df: pd.DataFrame
    root: Path

    def path(self, rel: str) -> Path:
        return self.root / rel

    def select(self, rows=None, domains=None) -> "Manifest":
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
        return read_image(self.path(self.df.image.iat[i]))

    def label(self, i: int) -> np.ndarray:
        row = self.df.iloc[i]
        return decode_label(self.path(row.label), row.encoding)

    def instance(self, i: int) -> np.ndarray | None:
        rel = self.df.instance.iat[i]
        return None if rel is None or pd.isna(rel) else read_label(self.path(rel), dtype=np.int32)


def decode_label(path: Path, encoding: str) -> np.ndarray:
    """Read a label PNG in its dataset's encoding and return trainIds (uint8, 255 = ignore)."""
    raw = read_label(path, dtype=None)
    if raw.dtype != np.uint8:
        raise DataError(f"{path}: label PNG is {raw.dtype}, expected 8-bit")
    if encoding == "labelIds":
        bad = np.setdiff1d(np.unique(raw), np.fromiter(VALID_LABEL_IDS, int))
        if bad.size:
            raise DataError(f"{path}: label values {bad[:10].tolist()} are not Cityscapes labelIds (0..33)")
        return label_ids_to_train_ids(raw)
    if encoding == "trainIds":
        vals = np.unique(raw)
        bad = vals[(vals >= NUM_CLASSES) & (vals != IGNORE)]
        if bad.size:
            raise DataError(f"{path}: label values {bad[:10].tolist()} are not trainIds (0..18 or 255)")
        return raw
    raise DataError(f"{path}: unknown label encoding {encoding!r}; expected one of {ENCODINGS}")


def check_sample(root: Path, row) -> tuple[int, int]:
    """Open every file of one manifest row and check it; returns (height, width)."""
    img_path = root / row["image"]
    img = read_image(img_path)
    h, w = img.shape[:2]
    for key in ("label", "instance"):
        rel = row.get(key)
        if rel is None or pd.isna(rel):
            continue
        path = root / rel
        lab = decode_label(path, row["encoding"]) if key == "label" else read_label(path, dtype=None)
        if lab.shape[:2] != (h, w):
            raise DataError(f"{path}: {key} size {lab.shape[1]}x{lab.shape[0]} differs from its image "
                            f"{img_path.name} ({w}x{h})")
    return h, w


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
    return df[COLUMNS].reset_index(drop=True)


def write_manifest(df: pd.DataFrame, path: str | Path, root: str | Path) -> None:
    df = validate_frame(df, str(path))
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_ROOT_KEY] = str(root).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_manifest(path: str | Path, root: str | Path | None = None) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run the prepare_data stage first)")
    try:
        table = pq.read_table(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable parquet manifest: {err}") from None
    stored = (table.schema.metadata or {}).get(_ROOT_KEY)
    if root is None:
        if stored is None:
            raise DataError(f"{path}: manifest has no data root in its metadata; pass one")
        root = stored.decode()
    df = validate_frame(table.to_pandas(), str(path))
    return Manifest(df, Path(root))
