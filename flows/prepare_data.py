"""Stage prepare_data: build the dataset and its manifest (docs/design.md 2).

Synthetic data is generated in shards by Prefect tasks whose persisted results are keyed by a
digest of the generator params and the shard, into a hidden temporary directory that is renamed
to ``data/prepared`` only when every shard is done: a killed run leaves nothing that looks
complete, and the rerun regenerates only the shards that had not finished. Real datasets are
scanned in place by their adapter. Either way every sample is opened and checked before the
manifest is written.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from flows.common import catch_user_errors, digest, key_from_arg, stage_flow, stage_inputs, stage_main, task_results
from flows.paths import DATA_REPORTS, MANIFEST, PREPARED
from nightlab.data import adapters
from nightlab.data.manifest import read_manifest, write_manifest
from nightlab.data.prepare import class_frequency, generate_shard, inspect_samples, synthetic_shards
from nightlab.io import atomic_path, write_json, write_table
from nightlab.labels import IGNORE
from nightlab.viz import plot_class_frequency, save_grid

READS: tuple[Path, ...] = ()  # plus data.root for real kinds
WRITES = (PREPARED, MANIFEST, DATA_REPORTS)


@task(persist_result=True, cache_key_fn=key_from_arg, task_run_name="generate-{split}-{first}")
@catch_user_errors
def generate(key: str, out: str, split: str, first: int, indices: list[int], seed: int, cfg) -> list[dict]:
    return generate_shard(Path(out), split, indices, seed, cfg)


def _synthetic(p, out: Path, log) -> tuple[pd.DataFrame, Path]:
    cfg = p.data.synthetic
    # The work directory is named by the content digest, so a rerun with the same params finds
    # the shards a killed run already wrote (and Prefect's cache says which ones finished).
    base = digest("synthetic", cfg, p.data.seed, list(p.data.splits), stage_inputs("prepare_data"))  # code too
    work = out.parent / f".{out.name}.partial-{base[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    shards = synthetic_shards(cfg, p.data.splits)

    def submit(refresh: bool = False):
        fn = generate.with_options(refresh_cache=True) if refresh else generate
        return [fn.submit(digest(base, s, i), str(work), s, i[0], i, p.data.seed, cfg) for s, i in shards]

    futures = submit()
    rows = [r for shard in task_results(futures) for r in shard]
    missing = [r["image"] for r in rows if not (work / r["image"]).is_file()]
    if missing:  # cache says done but the files are gone (work dir deleted): regenerate all
        log.warning(f"{len(missing)} cached shard outputs missing; regenerating")
        futures = submit(refresh=True)
        rows = [r for shard in task_results(futures) for r in shard]
    log.info(f"generated {len(rows)} images ({len(futures)} shards) in {work}")
    return pd.DataFrame(rows), work


@stage_flow("prepare_data")
def prepare_data(p) -> dict:
    log = get_run_logger()
    out = Path(p.data.out)
    if p.data.kind == "synthetic":
        df, work = _synthetic(p, out, log)
        root = work
    else:
        src = p.data.source()
        df = adapters.scan(src.kind, src.root, src.splits, src.encoding, src.domain)
        root, work = Path(src.root), None
        log.info(f"scanned {len(df)} {src.kind} samples under {root}")
    df, counts = inspect_samples(root, df, p.data.check_workers)  # raises DataError naming the bad file
    freq = class_frequency(df, counts)

    if work is not None:  # everything checked: publish the directory, then the manifest
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
        root = out
    else:
        with atomic_path(out, is_dir=True) as tmp:
            write_json(tmp / "source.json", {"kind": p.data.kind, "root": str(root), "samples": len(df)})
    write_manifest(df, MANIFEST, root)

    DATA_REPORTS.mkdir(parents=True, exist_ok=True)
    write_table(freq, csv=DATA_REPORTS / "class_frequency.csv")
    plot_class_frequency(freq, DATA_REPORTS / "class_frequency.png")
    save_grid(DATA_REPORTS / "samples.png", sample_rows(MANIFEST))
    summary = {"data.samples": len(df), "data.classes_present": int((counts.sum(0) > 0).sum())}
    for (split, domain), g in df.groupby(["split", "domain"]):
        summary[f"data.{split}.{domain}"] = len(g)
    write_json(DATA_REPORTS / "summary.json", summary)
    log.info(f"manifest {MANIFEST}: {summary}")
    return summary


def sample_rows(manifest_path: Path, n: int = 3) -> list[list[np.ndarray]]:
    """Night image, day image and colourised labels of the first ``n`` train scenes."""
    m = read_manifest(manifest_path)
    rows = []
    train = m.df[m.df.split == "train"]
    night = train[train.domain == "night"] if (train.domain == "night").any() else train
    for i in night.index[:n]:
        stem = Path(m.df.image.at[i]).name.replace("_night_", "_day_")
        day = m.df.index[m.df.image.str.endswith(stem)]
        lab = m.label(int(i))
        panels = [m.image(int(i))] + ([m.image(int(day[0]))] if len(day) else []) + [lab.copy()]
        panels[-1][lab == IGNORE] = IGNORE
        rows.append(panels)
    return rows


if __name__ == "__main__":
    stage_main(prepare_data, "Build the dataset (synthetic or a real adapter) and its manifest.")
