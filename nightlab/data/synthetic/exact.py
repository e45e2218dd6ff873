"""Image arithmetic that gives the same bits on every x86 machine.

Why: the pixels of generator version 1 differ between machines. numpy's transcendental functions
(``np.power``, ``np.exp``) and OpenCV's float kernels (``GaussianBlur``, ``resize``) dispatch to
SIMD code chosen at run time (SSE, AVX2 with fused multiply-add, AVX-512), and each path rounds
differently; a last-bit difference before the final rounding to uint8 flips some pixels, and
the PNG bytes then differ, so DVC sees another dataset. (Measured here by switching CPU features
off: ``NPY_DISABLE_CPU_FEATURES`` and ``OPENCV_CPU_DISABLE``; tests/test_synthetic.py does it.)

The functions below use only the operations IEEE 754 rounds exactly and identically everywhere:
``+ - * /``, ``sqrt``, ``floor`` and ``ldexp``, each as its own numpy ufunc call (so no compiler
can fuse a multiply and an add), in a fixed order.
"""
from __future__ import annotations

import numpy as np

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split in two so that n * ln2 is exact for |n| < 2**20
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.44269504088896338700e00


def exp(x) -> np.ndarray:
    """e**x (float64) for x in [-700, 700]: range reduction to |r| <= ln2/2, then a degree-13 Taylor
    polynomial (error below 1e-15 relative), then an exact power-of-two scaling."""
    x = np.asarray(x, dtype=np.float64)
    n = np.floor(np.add(np.multiply(x, _LOG2E), 0.5))
    r = np.subtract(np.subtract(x, np.multiply(n, _LN2_HI)), np.multiply(n, _LN2_LO))
    p = np.full_like(r, 1.0 / 6227020800.0)  # 1/13!
    for k in range(12, -1, -1):
        p = np.add(np.multiply(p, r), 1.0 / _factorial(k))
    return np.ldexp(p, n.astype(np.int32))


def _factorial(k: int) -> float:
    out = 1.0
    for i in range(2, k + 1):
        out *= i
    return out


def _axis_taps(sigma: float) -> np.ndarray:
    radius = max(1, int(3 * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = exp(np.divide(np.multiply(np.multiply(x, x), -0.5), sigma * sigma))
    return np.divide(w, _ordered_sum(w)).astype(np.float32)


def _ordered_sum(values) -> float:
    total = 0.0
    for v in np.asarray(values, dtype=np.float64).ravel():
        total += float(v)
    return total


def _conv_axis(img: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Correlate along one axis (0 or 1) with reflect-101 borders; taps summed in a fixed order."""
    r = len(taps) // 2
    n = img.shape[axis]
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    padded = np.pad(img, pad, mode="reflect")
    out = np.zeros_like(img, dtype=np.float32)
    for k, t in enumerate(taps):
        part = padded[k:k + n] if axis == 0 else padded[:, k:k + n]
        out = np.add(out, np.multiply(part, np.float32(t)))
    return out


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float32 (H, W) or (H, W, C) image."""
    taps = _axis_taps(sigma)
    return _conv_axis(_conv_axis(img.astype(np.float32, copy=False), taps, 0), taps, 1)


def downsample(img: np.ndarray, f: int) -> np.ndarray:
    """Mean of f x f blocks (H and W must be multiples of f), summed in a fixed order."""
    out = None
    for dy in range(f):
        for dx in range(f):
            part = img[dy::f, dx::f].astype(np.float32)
            out = part if out is None else np.add(out, part)
    return np.multiply(out, np.float32(1.0 / (f * f)))


def upsample(img: np.ndarray, f: int, size: tuple[int, int]) -> np.ndarray:
    """Bilinear enlargement by ``f`` (pixel centres aligned as OpenCV's INTER_LINEAR), to ``size`` (h, w)."""
    return _resize_axis(_resize_axis(img.astype(np.float32, copy=False), f, size[0], 0), f, size[1], 1)


def _resize_axis(img: np.ndarray, f: int, n_out: int, axis: int) -> np.ndarray:
    n_in = img.shape[axis]
    pos = np.divide(np.subtract(np.add(np.arange(n_out, dtype=np.float64), 0.5), f * 0.5), f)
    lo = np.floor(pos)
    frac = np.subtract(pos, lo).astype(np.float32)
    i0 = np.clip(lo, 0, n_in - 1).astype(np.int64)
    i1 = np.clip(lo + 1, 0, n_in - 1).astype(np.int64)
    shape = [1] * img.ndim
    shape[axis] = n_out
    frac = frac.reshape(shape)
    a, b = np.take(img, i0, axis=axis), np.take(img, i1, axis=axis)
    return np.add(a, np.multiply(np.subtract(b, a), frac))


_GAMMA_GRID = 1 << 14  # inputs are quantised to 1/16384 before the table: fine enough for 8-bit output


def gamma_to_uint8(img: np.ndarray, gamma: float) -> np.ndarray:
    """round(255 * clip(img, 0, 1) ** (1 / gamma)) for gamma in {1, 1.25, 1.5, 2}, through a table.

    The input is quantised to a grid of 1/16384 (an exact float32 multiply and floor), and each grid
    cell's output level counts the thresholds ((v - 0.5) / 255) ** gamma below the cell's centre;
    for these gammas a threshold needs only products and square roots, which round exactly.
    """
    u = np.divide(np.subtract(np.arange(1, 256, dtype=np.float64), 0.5), 255.0)
    roots = {1.0: np.ones_like(u), 1.25: np.sqrt(np.sqrt(u)), 1.5: np.sqrt(u), 2.0: u}
    if gamma not in roots:
        raise ValueError(f"gamma {gamma} has no exact thresholds; use one of {sorted(roots)}")
    thresholds = np.multiply(u, roots[gamma])
    centres = np.divide(np.add(np.arange(_GAMMA_GRID + 1, dtype=np.float64), 0.5), _GAMMA_GRID)
    table = np.searchsorted(thresholds, centres, side="right").astype(np.uint8)
    cell = np.floor(np.multiply(np.clip(img, 0, 1).astype(np.float32), np.float32(_GAMMA_GRID))).astype(np.int32)
    return table[cell]
