"""How a stage declares what DVC tracks of it: its outputs, by kind. ``nightlab dvc-yaml``
(flows/dvc_yaml.py) writes dvc.yaml from these declarations, each flow's ``READS`` and ``PARAMS``,
and its import closure.

Plots are PNG images drawn by the stages (nightlab.viz), so that ``dvc plots show`` works offline.

Every output is ``persist: true`` (a stage's outputs change together or not at all:
flows.common.StageOutputs, so DVC must not delete them before the stage runs). Outputs under
``reports/`` are committed to git and not cached by DVC; everything else is cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GIT_TRACKED = Path("reports")


@dataclass(frozen=True)
class Output:
    path: Path
    kind: str = "outs"  # outs | metrics | plots: the dvc.yaml list it goes in
    cache: bool | None = None  # None: by the rule above

    @property
    def cached(self) -> bool:
        return self.cache if self.cache is not None else not Path(self.path).is_relative_to(GIT_TRACKED)


def out(path: str | Path, cache: bool | None = None) -> Output:
    return Output(Path(path), "outs", cache)


def metric(path: str | Path) -> Output:
    """A flat JSON of numbers for ``dvc metrics``."""
    return Output(Path(path), "metrics")


def plot(path: str | Path) -> Output:
    """A figure the stage draws (PNG), for ``dvc plots show/diff``. Images only: DVC renders a CSV plot
    with Vega, which its HTML page loads from a CDN, so offline it stays blank; an image is copied into
    the page as it is. The table behind a figure is a plain output (a CSV under reports/)."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"{path}: a plot is a PNG the stage draws (Vega plots need a CDN); declare tables as outs")
    return Output(Path(path), "plots")


def outputs(writes) -> list[Output]:
    """A flow's ``WRITES`` as Outputs (a plain path is an ``out``)."""
    return [w if isinstance(w, Output) else out(w) for w in writes]
