"""Checking a dataset: open every sample once (decode, sizes, values, truncation, md5), report every
bad file in one pass, and the per-source manifest fragments that check_source writes."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nightlab.data.manifest import COLUMNS, check_sample
from nightlab.io import DataError, atomic_path
from nightlab.labels import CLASS_NAMES, NUM_CLASSES


def inspect_samples(root, df: pd.DataFrame, workers: int = 2, max_errors: int = 20) -> tuple[pd.DataFrame, np.ndarray]:
    """Open every image and label once, check them, hash them and count label pixels per class.

    ``root`` is the data root, or {source: root}. Every bad file is reported in one DataError (up
    to ``max_errors``, then the check stops: fixing a dataset should not take one run per file).
    Returns the frame with height, width and md5 filled, and class counts (N, 19).
    """
    def root_of(row) -> Path:
        return Path(root[row["source"]] if isinstance(root, dict) else root)

    errors: list[str] = []
    lock = threading.Lock()

    def one(row):
        if len(errors) >= max_errors:  # enough to act on: skip the rest
            return None
        try:
            c = check_sample(root_of(row), row)
        except DataError as err:
            with lock:
                errors.append(str(err))
            return None
        return c.height, c.width, c.md5, np.bincount(c.train_ids[c.train_ids < NUM_CLASSES].ravel(),
                                                     minlength=NUM_CLASSES)

    records = df.to_dict("records")
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, records))
    if errors:
        shown = sorted(errors)[:max_errors]
        more = (f"; the check stopped there (data.max_errors = {max_errors})" if len(errors) >= max_errors else "")
        raise DataError(f"{len(shown)} bad file(s) among {len(records)} samples{more}:\n"
                        + "\n".join(f"  {e}" for e in shown))
    df = df.copy()
    df["height"] = [r[0] for r in results]
    df["width"] = [r[1] for r in results]
    df["md5"] = [r[2] for r in results]
    counts = np.stack([r[3] for r in results]) if results else np.zeros((0, NUM_CLASSES), np.int64)
    refuse_unlabelled(df, counts)
    return df, counts


def refuse_unlabelled(df: pd.DataFrame, counts: np.ndarray) -> None:
    """Refuse a source/split/domain whose masks are all ignore (255): scored, every IoU would be NaN and no
    class could be hard; trained on, nothing would be learnt. Splits select rows by source/split/domain, so
    every non-empty selection then has labelled pixels."""
    empty = {(src, split, dom): len(idx)
             for (src, split, dom), idx in df.groupby(["source", "split", "domain"]).groups.items()
             if not counts[np.asarray(idx)].any()}
    if empty:
        named = ", ".join(f"{s}/{sp}/{d} ({n} mask{'s' if n > 1 else ''})" for (s, sp, d), n in sorted(empty.items()))
        where = " or ".join(f"data.sources.{s}.splits" for s in sorted({s for s, _, _ in empty}))
        raise DataError(f"every label pixel is ignore (255) in split(s) {named}: nothing to train or score on "
                        f"there; check the source's encoding, or leave the split out of {where}")


def class_frequency(df: pd.DataFrame, counts: np.ndarray) -> pd.DataFrame:
    """Pixel count and frequency of every class per (split, domain): the dataset summary table."""
    out = []
    for (split, domain), idx in df.groupby(["split", "domain"]).groups.items():
        c = counts[np.asarray(idx)].sum(0)
        total = max(int(c.sum()), 1)
        present = (counts[np.asarray(idx)] > 0).sum(0)
        for k, name in enumerate(CLASS_NAMES):
            out.append(dict(split=split, domain=domain, class_id=k, class_name=name, pixels=int(c[k]),
                            frequency=c[k] / total, images_with_class=int(present[k]), images=len(idx)))
    return pd.DataFrame(out)


# A checked source (stage check_source@<name>): its manifest rows with md5, its class counts, and
# the source settings it was made with (so prepare_data can tell a stale fragment).
_FRAGMENT_KEY = b"nightlab.source"


def write_fragment(df: pd.DataFrame, counts: np.ndarray, path: str | Path, source: dict) -> None:
    table = pa.Table.from_pandas(df[COLUMNS].assign(counts=list(counts.astype(np.int64))), preserve_index=False)
    meta = {**(table.schema.metadata or {}), _FRAGMENT_KEY: json.dumps(source, sort_keys=True).encode()}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_fragment(path: str | Path, source: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """A source's checked rows and class counts; refuses one made with other settings than ``source``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checked source not found (run `dvc repro` so that check_source runs first)")
    table = pq.read_table(path)
    made_with = json.loads((table.schema.metadata or {}).get(_FRAGMENT_KEY, b"{}"))
    if made_with != json.loads(json.dumps(source, sort_keys=True)):
        raise DataError(f"{path}: made for other source settings ({made_with}); run `dvc repro` to check the "
                        "source again")
    df = table.to_pandas()
    counts = np.stack(df.pop("counts").to_numpy()) if len(df) else np.zeros((0, NUM_CLASSES), np.int64)
    return df, counts
