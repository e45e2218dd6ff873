"""Hard-class selection (docs/design.md 1.2) and reading its result back."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from nightlab.io import DataError, read_json


def select_hard(table: pd.DataFrame, threshold: float) -> list[dict]:
    """Rows of (class_id, class_name, iou) with iou < threshold, hardest first. NaN IoU is never hard."""
    rows = [dict(id=int(r.class_id), name=str(r.class_name), iou=float(r.iou))
            for r in table.itertuples() if r.iou is not None and not math.isnan(r.iou) and r.iou < threshold]
    return sorted(rows, key=lambda r: r["iou"])


def read_hard_classes(path: str | Path) -> list[int]:
    data = read_json(path)
    ids = data.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < 19 for i in ids):
        raise DataError(f"{path}: 'ids' must be a list of trainIds 0..18")
    return ids
