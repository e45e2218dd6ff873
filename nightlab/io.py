"""File I/O with two rules: errors name the file and the problem, and outputs appear atomically.

Every writer goes through :func:`atomic_path`: the content is written to a temporary sibling
and renamed into place only when complete, so a killed stage never leaves a half-written
file (or directory) that looks finished.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from nightlab.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | Path, is_dir: bool = False):
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success, delete on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
        if is_dir and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except BaseException as err:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        name_the_output(err, {tmp: path}, writing=path)
        raise


def name_the_output(err: BaseException, staged: dict[Path, Path], writing: Path | None = None) -> None:
    """An OSError raised while writing an output names that output: a failed write (a full disk) names
    no file at all (``writing`` is the one being written), and a temporary's name ({temporary: final}
    in ``staged``) means nothing to the user."""
    if not isinstance(err, OSError):
        return
    if err.filename is None:
        err.filename = None if writing is None else str(writing)
        return
    name = Path(os.fsdecode(err.filename))
    for tmp, final in staged.items():
        if name.is_relative_to(tmp):
            err.filename = str(final / name.relative_to(tmp)) if name != tmp else str(final)
            return


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err}") from None


def write_table(df: pd.DataFrame, parquet: str | Path | None = None, csv: str | Path | None = None) -> None:
    if parquet is not None:
        with atomic_path(parquet) as tmp:
            df.to_parquet(tmp, index=False)
    if csv is not None:
        with atomic_path(csv) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable parquet table: {err}") from None
    missing = [c for c in (columns or []) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    return df


# A file's last bytes when it is complete: PNG's IEND chunk, JPEG's end-of-image marker. OpenCV
# decodes a truncated JPEG with only a warning (the missing rows come out flat grey), so
# completeness is checked on the bytes before decoding.
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read {what}: {err.strerror or err}") from None


def check_complete(path: str | Path, buf: bytes) -> None:
    """Refuse a PNG or JPEG file that was cut short (an interrupted copy or download)."""
    if not len(buf):  # cv2.imdecode raises on an empty buffer instead of returning None
        raise DataError(f"{path}: empty file (0 bytes)")
    data = bytes(buf[-64:]).rstrip(b"\x00")  # some writers pad the end with zeros
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and not data.endswith(_PNG_END):
        raise DataError(f"{path}: PNG file is truncated (no IEND chunk at the end)")
    if buf[:2] == b"\xff\xd8" and not data.endswith(_JPEG_END):
        raise DataError(f"{path}: JPEG file is truncated (no end-of-image marker)")


def decode_image(buf: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """RGB (H, W, 3) uint8 from the bytes of an image file (8-bit, or 16-bit scaled by its real range)."""
    check_complete(path, buf)
    # ANYDEPTH: IMREAD_COLOR alone keeps a 16-bit file's high byte, so 12-bit data would read as 0..15.
    # IGNORE_ORIENTATION: pixels as stored, as masks are read (IMREAD_COLOR would rotate by the EXIF tag).
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), flags)
    if img is None:
        raise DataError(f"{path}: cannot decode image (corrupt or not an image)")
    if img.dtype == np.uint16:
        img = _to_8_bit(img, _significant_bits(buf))
    elif img.dtype != np.uint8:
        raise DataError(f"{path}: image samples are {img.dtype}; expected 8- or 16-bit integers")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# EXIF orientations (tag 0x0112) other than 1, as a viewer applies them.
ORIENTATIONS = {2: "mirrored", 3: "rotated 180°", 4: "flipped upside down", 5: "mirrored and rotated 90° "
                "anticlockwise", 6: "rotated 90° clockwise", 7: "mirrored and rotated 90° clockwise",
                8: "rotated 90° anticlockwise"}


def exif_orientation(buf: bytes) -> int:
    """The EXIF orientation of an image file's bytes (1: upright, also when there is no tag)."""
    if b"Exif\x00\x00" not in buf[:1 << 16] and b"eXIf" not in buf:  # JPEG's APP1, PNG's chunk: cheap test first
        return 1
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(buf)) as im:
            value = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1  # no readable EXIF: decoding says whether the image itself is readable
    return value if value in ORIENTATIONS else 1


def _to_8_bit(img: np.ndarray, bits: int | None) -> np.ndarray:
    """A 16-bit frame scaled so that its full range maps to 0..255. The range is what the file's sBIT
    chunk says; without one, a maximum below 4096 is 12-bit data (camera raw stored in 16 bits, the
    common case; a true 16-bit frame that dark would be nearly black), otherwise 16-bit."""
    if bits is None:
        bits = 12 if int(img.max()) < 4096 else 16
    top = 2 ** bits - 1
    return np.round(np.minimum(img, top).astype(np.float32) * (255 / top)).astype(np.uint8)


def _significant_bits(buf: bytes) -> int | None:
    """The significant bits a PNG's sBIT chunk states (the most of its colour channels), or None."""
    at = 8
    while buf[:8] == b"\x89PNG\r\n\x1a\n" and at + 8 <= len(buf):
        size, kind = int.from_bytes(buf[at:at + 4], "big"), buf[at + 4:at + 8]
        if kind == b"sBIT" and size:
            bits = max(buf[at + 8:at + 8 + min(size, 3)])  # alpha (a 4th byte) does not scale colours
            return bits if 1 <= bits <= 16 else None
        if kind == b"IDAT":  # sBIT comes before the image data
            return None
        at += 12 + size
    return None


def read_image(path: str | Path) -> np.ndarray:
    """Read a colour image as RGB (H, W, 3) uint8 (see :func:`decode_image`)."""
    return decode_image(read_bytes(path, "image file"), path)


def decode_label_map(buf: bytes, path: str | Path = "<bytes>", dtype=np.uint8) -> np.ndarray:
    """A single-channel label map (8- or 16-bit PNG) from its bytes, unchanged or cast to ``dtype``."""
    check_complete(path, buf)
    lab = _palette_indices(buf, path) if _is_palette_png(buf) else cv2.imdecode(np.frombuffer(buf, np.uint8),
                                                                                  cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise DataError(f"{path}: cannot decode label PNG (corrupt or not an image)")
    if lab.ndim == 3:
        # Some tools save grey labels as 3 identical channels; anything else is not a label map.
        if not (np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2])):
            raise DataError(f"{path}: label PNG has {lab.shape[2]} differing channels, expected one")
        lab = lab[..., 0]
    if dtype is None:
        return lab
    dtype = np.dtype(dtype)
    if lab.dtype != dtype and lab.size and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = int(lab.min()), int(lab.max())
        if lo < info.min or hi > info.max:  # astype would silently wrap (e.g. 16-bit instance ids to uint8)
            raise DataError(f"{path}: label values {lo}..{hi} ({lab.dtype}) do not fit {dtype}")
    return lab.astype(dtype, copy=False)


def _is_palette_png(buf: bytes) -> bool:
    """A palette-mode PNG: IHDR's colour type (byte 25 of the file) is 3."""
    return buf[:8] == b"\x89PNG\r\n\x1a\n" and len(buf) > 25 and buf[12:16] == b"IHDR" and buf[25] == 3


def _palette_indices(buf: bytes, path) -> np.ndarray | None:
    """The index plane of a palette PNG. Tools save masks this way (index = class id, the palette only
    for viewing); OpenCV would expand it to the palette's colours, so Pillow reads the indices."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(buf)) as im:
            return np.asarray(im, dtype=np.uint8) if im.mode == "P" else None
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def read_label(path: str | Path, dtype=np.uint8) -> np.ndarray:
    """Read a single-channel label PNG unchanged (8- or 16-bit)."""
    return decode_label_map(read_bytes(path, "label file"), path, dtype)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(path.suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)
        if not ok:
            raise DataError(f"{path}: could not encode image")
        tmp.write_bytes(buf.tobytes())


def write_label(path: str | Path, label: np.ndarray) -> None:
    """Write a single-channel uint8 or uint16 PNG."""
    write_image(path, label)
