"""Stage prepare_data: build the dataset and its manifest (docs/design.md 2).

The manifest gathers every source: the synthetic generator (``data.synthetic``, unless null) and
each entry of ``data.sources`` (checked by its own stage, check_source@<name>, whose result is read
here).

Synthetic data is generated in shards by Prefect tasks whose persisted results are keyed by a
digest of the generator params and the shard, into a hidden work directory that becomes
``data/prepared`` only when every shard is done: a killed run leaves nothing that looks complete,
and the rerun regenerates only the shards that had not finished. Every sample is opened and
checked before the manifest is written, and all outputs appear together or not at all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from flows.common import (
    StageOutputs,
    catch_user_errors,
    code_inputs,
    digest,
    key_from_arg,
    stage_flow,
    stage_main,
    task_results,
)
from flows.declare import metric, plot
from flows.paths import DATA_REPORTS, MANIFEST, PREPARED, SOURCES, source_fragment
from nightlab.config import SYNTHETIC
from nightlab.data.manifest import read_manifest, write_manifest
from nightlab.data.prepare import class_frequency, inspect_samples, read_fragment
from nightlab.data.synthetic import generate_shard, synthetic_shards
from nightlab.io import write_json, write_table
from nightlab.labels import IGNORE
from nightlab.viz import plot_class_frequency, save_grid

READS = (SOURCES,)
WRITES = (PREPARED, MANIFEST, DATA_REPORTS / "class_frequency.csv", plot(DATA_REPORTS / "class_frequency.png"),
          DATA_REPORTS / "samples.png", metric(DATA_REPORTS / "summary.json"))
PARAMS = ("data",)


@task(persist_result=True, cache_key_fn=key_from_arg, task_run_name="generate-{split}-{first}")
@catch_user_errors
def generate(key: str, out: str, split: str, first: int, indices: list[int], seed: int, cfg) -> list[dict]:
    return generate_shard(Path(out), split, indices, seed, cfg)


def _synthetic(p, log) -> tuple[pd.DataFrame, Path]:
    cfg, out = p.data.synthetic, Path(p.data.out)
    # The work directory is named by the content digest, so a rerun with the same params finds
    # the shards a killed run already wrote (and Prefect's cache says which ones finished).
    base = digest(SYNTHETIC, cfg, p.data.seed, code_inputs("prepare_data"))
    work = out.parent / f".{out.name}.partial-{base[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    shards = synthetic_shards(cfg)

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
    d = p.data
    frames, counts, roots = [], [], {}
    with StageOutputs() as out:
        prepared = Path(d.out)
        if d.synthetic is not None:
            df, work = _synthetic(p, log)
            df, c = inspect_samples(work, df, d.check_workers, d.max_errors)
            out.adopt(prepared, work)
            frames.append(df)
            counts.append(c)
            roots[SYNTHETIC] = prepared
        else:  # nothing generated: data/prepared only says where the data is
            write_json(out(prepared, directory=True) / "sources.json", {"sources": d.source_names()})
        for name, src in d.sources.items():
            df, c = read_fragment(source_fragment(name), src.model_dump(mode="json"))
            frames.append(df)
            counts.append(c)
            roots[name] = Path(src.root)
        df = pd.concat(frames, ignore_index=True)
        counts = np.concatenate(counts)

        write_manifest(df, out(MANIFEST), roots)
        reports = out(DATA_REPORTS, directory=True)
        freq = class_frequency(df, counts)
        write_table(freq, csv=reports / "class_frequency.csv")
        plot_class_frequency(freq, reports / "class_frequency.png")
        save_grid(reports / "samples.png", sample_rows(read_manifest(out(MANIFEST), _staged(roots, prepared, out))))
        summary = {"data.samples": len(df), "data.classes_present": int((counts.sum(0) > 0).sum())}
        for (source, split, domain), g in df.groupby(["source", "split", "domain"]):
            summary[f"data.{source}.{split}.{domain}"] = len(g)
        write_json(reports / "summary.json", summary)
    log.info(f"manifest {MANIFEST}: {summary}")
    return summary


def _staged(roots: dict, prepared: Path, out: StageOutputs) -> dict:
    """The roots while the outputs are still staged (the generated data is not in place yet)."""
    return {k: (out.pending[prepared] if v == prepared else v) for k, v in roots.items()}


def sample_rows(m, n: int = 3) -> list[list[np.ndarray]]:
    """Night image, the same scene by day when there is one, and colourised labels of ``n`` samples
    (train rows first, night first)."""
    df = m.df.assign(_order=(m.df.split != "train") * 2 + (m.df.domain != "night"))
    rows = []
    for i in df.sort_values("_order", kind="stable").index[:n]:
        stem = Path(m.df.image.at[i]).name.replace("_night_", "_day_")
        same_scene = m.df.index[(m.df.image.str.endswith(stem)) & (m.df.domain == "day") & (m.df.index != i)]
        lab = m.label(int(i))
        panels = [m.image(int(i))] + ([m.image(int(same_scene[0]))] if len(same_scene) else []) + [lab.copy()]
        panels[-1][lab == IGNORE] = IGNORE
        rows.append(panels)
    return rows


if __name__ == "__main__":
    stage_main(prepare_data, "Build the dataset (synthetic, a real dataset, data.sources) and its manifest.")
