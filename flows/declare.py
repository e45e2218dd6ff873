"""How a stage declares what DVC tracks of it: its outputs, by kind. ``nightlab dvc-yaml``
(flows/dvc_yaml.py) writes dvc.yaml from these declarations, each flow's ``READS`` and ``PARAMS``,
and its import closure.

Every output is ``persist: true`` (a stage's outputs change together or not at all:
flows.common.StageOutputs, so DVC must not delete them before the stage runs). Outputs under
``reports/`` are committed to git and not cached by DVC; everything else is cached.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GIT_TRACKED = Path("reports")


@dataclass(frozen=True)
class Output:
    path: Path
    kind: str = "outs"  # outs | metrics | plots: the dvc.yaml list it goes in
    cache: bool | None = None  # None: by the rule above
    plot: dict = field(default_factory=dict)  # dvc plot properties (x, y, template)

    @property
    def cached(self) -> bool:
        return self.cache if self.cache is not None else not Path(self.path).is_relative_to(GIT_TRACKED)


def out(path: str | Path, cache: bool | None = None) -> Output:
    return Output(Path(path), "outs", cache)


def metric(path: str | Path) -> Output:
    """A flat JSON of numbers for ``dvc metrics``."""
    return Output(Path(path), "metrics")


def plot(path: str | Path, **props) -> Output:
    """A CSV for ``dvc plots``; ``props``: x, y, template."""
    return Output(Path(path), "plots", plot=props)


def outputs(writes) -> list[Output]:
    """A flow's ``WRITES`` as Outputs (a plain path is an ``out``)."""
    return [w if isinstance(w, Output) else out(w) for w in writes]
