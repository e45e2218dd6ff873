"""Stage check_source@<name>: read one entry of ``data.sources`` with its adapter and check every
file (decode, size, label values, truncation), hashing each one (docs/design.md 2).

dvc.yaml makes one stage per source (``foreach: ${data.sources}``) with the source's root as a
dependency, so DVC notices an added, removed or changed file under it; the result, a manifest
fragment with an md5 per sample, is what prepare_data gathers.
"""
from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from flows.common import StageOutputs, stage_flow, stage_main
from flows.paths import source_fragment
from nightlab.data import adapters
from nightlab.data.prepare import inspect_samples, write_fragment

FOREACH = "${data.sources}"  # one stage per source: check_source@<name>
READS = ("${item.root}",)  # the source's dataset: DVC hashes it
WRITES = (source_fragment("${key}"),)
PARAMS = ("data.sources.${key}", "data.check_workers", "data.max_errors")


@stage_flow("check_source", foreach=True)
def check_source(p, name: str) -> dict:
    log = get_run_logger()
    src = p.data.sources[name]
    df = adapters.scan(src.kind, src.root, src.splits, src.encoding, src.domain, name)
    log.info(f"checking {len(df)} samples of source {name} ({src.kind}) under {src.root}")
    df, counts = inspect_samples(Path(src.root), df, p.data.check_workers, p.data.max_errors)
    with StageOutputs() as out:
        write_fragment(df, counts, out(source_fragment(name)), src.model_dump(mode="json"))
    summary = {f"{split}/{domain}": len(g) for (split, domain), g in df.groupby(["split", "domain"])}
    log.info(f"source {name}: {summary}")
    return summary


if __name__ == "__main__":
    stage_main(check_source, "Check one source of data.sources and write its manifest fragment.")
