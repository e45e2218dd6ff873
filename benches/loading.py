"""Data loading at real frame size: peak memory and samples/s of ImageDataset without a cache, with the
old unbounded cache and with a bounded one.

A Cityscapes-layout dataset of 2048x1024 frames (tests/scaffold.py synthetic_in_layout, labelIds PNGs
read through the cityscapes adapter) is iterated twice, in training mode as the NightCity profile
uses it (image_scale 1.0, random 512x1024 crops, flips, colour jitter), in a shuffled order per pass
as the training sampler's, once per variant:

* ``off``: ``cache_mb: 0``, every sample decoded on demand (what the real-data profiles use);
* ``unbounded``: a bound larger than the dataset: every decoded frame kept, as every dataset did
  before the cache was bounded (a dict that grew with the dataset);
* ``bounded``: ``cache_mb`` of a quarter of the decoded dataset: the first frames loaded are kept,
  the others decoded on demand (what the datasets do when the data outgrows ``cache_mb``);
* ``bounded_lru``: the same bound with least-recently-used eviction instead (the alternative the
  cache's policy was chosen against).

Each variant runs in a fresh Python process, so one cannot inherit another's memory; its peak
resident memory is getrusage's ru_maxrss, and its growth is that minus the resident memory just
before the first sample (after the imports and the dataset's construction). What a cache costs is
its variant's growth minus the growth without a cache (decoding and augmenting a sample need
memory of their own, the same in every variant). Rounds run the three
variants side by side; every figure is a median over rounds.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benches.common import ROOT, figure, temp_dir

H, W = 1024, 2048
FRAME_MB = H * W * 4 / 2**20  # a decoded frame at scale 1.0: RGB + trainIds, uint8
CROP = (512, 1024)


def _variants(frames: int) -> dict[str, tuple[float, str]]:
    """name -> (cache_mb, policy)"""
    bound = frames * FRAME_MB / 4
    return {"off": (0, "first"), "unbounded": (1_000_000, "first"), "bounded": (bound, "first"),
            "bounded_lru": (bound, "lru")}


def run(quick: bool) -> dict:
    frames, repeat = (8, 1) if quick else (24, 3)
    root = temp_dir("loading") / "cityscapes"
    from scaffold import synthetic_in_layout  # tests/, on sys.path through benches.common

    t0 = time.perf_counter()
    synthetic_in_layout("cityscapes", root, "train", frames, h=H, w=W)
    write_s = time.perf_counter() - t0
    rounds = []
    for _ in range(repeat):
        rounds.append({name: _in_child(root, *v) for name, v in _variants(frames).items()})
    med = {name: {k: statistics.median(r[name][k] for r in rounds) for k in rounds[0][name]}
           for name in rounds[0]}
    off, full, bounded, lru = med["off"], med["unbounded"], med["bounded"], med["bounded_lru"]
    bound_mb = _variants(frames)["bounded"][0]
    cost = {name: med[name]["growth_mb"] - off["growth_mb"] for name in med}
    figures = [
        figure("decoded dataset (frames x frame size)", frames * FRAME_MB, "MiB"),
        figure("peak RSS, cache off", off["peak_mb"], "MiB"),
        figure("peak RSS, unbounded cache (before)", full["peak_mb"], "MiB"),
        figure("peak RSS, bounded cache", bounded["peak_mb"], "MiB"),
        figure("peak RSS, bounded LRU cache", lru["peak_mb"], "MiB"),
        figure("RSS growth while iterating, cache off", off["growth_mb"], "MiB"),
        figure("cache memory (growth over cache off), unbounded", cost["unbounded"], "MiB"),
        figure("cache memory (growth over cache off), bounded", cost["bounded"], "MiB",
               f"<= bound {bound_mb:.0f} MiB + 2 frames of allocator slack",
               cost["bounded"] <= bound_mb + 2 * FRAME_MB),
        figure("cache memory (growth over cache off), bounded LRU", cost["bounded_lru"], "MiB"),
        figure("samples/s over both passes, cache off", off["rate"], "samples/s"),
        figure("samples/s over both passes, unbounded cache", full["rate"], "samples/s"),
        figure("samples/s over both passes, bounded cache", bounded["rate"], "samples/s"),
        figure("samples/s over both passes, bounded LRU cache", lru["rate"], "samples/s"),
        figure("second pass samples/s, cache off", off["rate_pass2"], "samples/s"),
        figure("second pass samples/s, unbounded cache", full["rate_pass2"], "samples/s"),
        figure("second pass samples/s, bounded cache", bounded["rate_pass2"], "samples/s"),
        figure("second pass samples/s, bounded LRU cache", lru["rate_pass2"], "samples/s"),
        figure("second pass cache hit rate, bounded", bounded["hit_rate_pass2"], ""),
        figure("second pass cache hit rate, bounded LRU", lru["hit_rate_pass2"], ""),
        figure("samples/s, cache off / unbounded cache", off["rate"] / full["rate"], "x"),
    ]
    return {
        "title": "Data loading at 2048x1024: memory and speed with and without the frame cache",
        "setup": f"{frames} Cityscapes-layout frames of {W}x{H} (synthetic PNGs with labelIds, written in "
                 f"{write_s:.0f} s), "
                 f"ImageDataset at scale 1.0, train mode (random {CROP[0]}x{CROP[1]} crop, flip, jitter), two passes "
                 f"in shuffled order, a fresh process per variant; bounded caches {bound_mb:.0f} MiB (a quarter of the "
                 f"decoded dataset); peak RSS by getrusage ru_maxrss",
        "repeat": repeat,
        "figures": figures,
        "raw": {"rounds": rounds, "frame_mb": FRAME_MB},
    }


def _in_child(root: Path, cache_mb: float, policy: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benches.loading", str(root), str(cache_mb), policy], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    """Resident memory now (/proc/self/statm), MiB."""
    import os

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(root: Path, cache_mb: float, policy: str) -> dict:
    import resource

    import torch

    from nightlab.data.adapters import scan
    from nightlab.data.dataset import FrameCache, ImageDataset
    from nightlab.data.manifest import Manifest

    m = Manifest(scan("cityscapes", root, ["train"]), root)
    ds = ImageDataset(m, 1.0, train=True, crop=CROP, hflip=True, seed=0, cache_mb=cache_mb)
    ds.cache = FrameCache(ds.cache.max_bytes, policy)
    before = _rss_mb()
    times, hits = [], []
    for epoch in range(2):
        ds.set_epoch(epoch)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(epoch)).tolist()  # as the sampler
        h0 = ds.cache.hits
        t0 = time.perf_counter()
        for i in order:
            ds[i]
        times.append(time.perf_counter() - t0)
        hits.append(ds.cache.hits - h0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = len(ds)
    return {"peak_mb": peak, "growth_mb": peak - before, "rate": 2 * n / sum(times), "rate_pass1": n / times[0],
            "rate_pass2": n / times[1], "hit_rate_pass2": hits[1] / n, "cached_mb": ds.cache.nbytes / 2**20}


if __name__ == "__main__":
    print(json.dumps(_child(Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3])))
