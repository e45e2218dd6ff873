"""``nightlab compare``: the headline numbers of several revisions, side by side, in percent.

``dvc metrics show`` prints every key of reports/metrics.json on one very wide line, ``dvc metrics
diff`` sorts the interval keys before the headline ones, and both print fractions while every report
is in percent. This prints, per revision (a git revision, a DVC experiment's name, or the workspace),
each main variant's mIoU and hard-class mIoU (with an interval where the metrics hold one, and the
change from the first revision), then each claimed difference with its paired-bootstrap 95% interval,
in lines of at most :data:`WIDTH` characters.

A revision's metrics are read from git (``git show <rev>:reports/metrics.json``): the file is
git-tracked, and a DVC experiment is a git commit under ``refs/exps/``, found by its name.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nightlab.io import DataError
from nightlab.variants import CLAIMS, HEADLINE, LABELS, metric

WIDTH = 120
WORKSPACE = "workspace"
METRICS = "reports/metrics.json"


@dataclass
class Revision:
    name: str  # as given
    label: str  # the name and its commit
    metrics: dict | None  # None: no metrics file at this revision
    subject: str = ""  # the commit's date and subject


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def _experiment_ref(root: Path, name: str) -> str | None:
    """The git ref of the DVC experiment ``name`` (refs/exps/<xx>/<baseline>/<name>), if there is one."""
    refs = _git(root, "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    found = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    return found[0] if len(found) == 1 else None


def resolve(root: Path, name: str) -> str:
    """The commit of a git revision or of a DVC experiment's name; a DataError naming it otherwise."""
    res = _git(root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if res.returncode == 0:
        return res.stdout.strip()
    ref = _experiment_ref(root, name)
    if ref is not None:
        return _git(root, "rev-parse", ref).stdout.strip()
    raise DataError(f"{name}: neither a git revision nor a DVC experiment of this project "
                    "(see `git log --oneline` and `dvc exp list --all-commits`)")


def read_revision(root: Path, name: str, path: str = METRICS) -> Revision:
    """The metrics of revision ``name`` (``workspace``: the files on disk)."""
    root = Path(root)
    if name == WORKSPACE:
        file = root / path
        return Revision(name, WORKSPACE, _flatten(json.loads(file.read_text())) if file.is_file() else None,
                        "the files on disk")
    commit = resolve(root, name)
    subject = _git(root, "log", "-1", "--format=%ad %s", "--date=short", commit).stdout.strip()
    label = f"{name} ({commit[:8]})" if name != commit else commit[:8]
    shown = _git(root, "show", f"{commit}:{path}")
    if shown.returncode != 0:
        return Revision(name, label, None, subject)
    try:
        return Revision(name, label, _flatten(json.loads(shown.stdout)), subject)
    except json.JSONDecodeError as err:
        raise DataError(f"{name}:{path}: not JSON ({err})") from None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _pct(v, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v + 0.0:+.1f}".replace("-0.0", "+0.0") if signed else f"{100 * v:.1f}"


def _interval(m: dict, key: str, ci: tuple[str, str], signed: bool = False) -> str:
    lo, hi = m.get(f"{key}{ci[0]}"), m.get(f"{key}{ci[1]}")
    return f" [{_pct(lo, signed)}, {_pct(hi, signed)}]" if lo is not None and hi is not None else ""


def _variants(metrics: list[dict]) -> list[str]:
    """The main variants (nightlab.variants.HEADLINE), then any other (the baselines), as the metrics hold them."""
    keys = [k for m in metrics for k in m]
    others = [k[: -len(".mIoU")] for k in dict.fromkeys(keys) if k.endswith(".mIoU")]
    return [v for v in HEADLINE if v in others] + [v for v in others if v not in HEADLINE]


def _claims(metrics: list[dict]) -> list[tuple[str, str]]:
    """(name, label) of every difference the metrics hold: the claims first, then any other ``<name>.diff``."""
    known = {c.name: c.label for c in CLAIMS}
    names = [k[: -len(".diff")] for m in metrics for k in m if k.endswith(".diff")]
    names = list(dict.fromkeys(names))
    return [(n, known[n]) for n in known if n in names] + [(n, n.replace("_vs_", " - ")) for n in names
                                                          if n not in known]


def _cut(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def render(revisions: list[Revision], width: int = WIDTH) -> str:
    """Per revision: each variant's mIoU and hard-class mIoU in % (the change from the first revision
    in parentheses), regions per image, then each difference with its 95% interval."""
    have = [r.metrics for r in revisions if r.metrics]
    names = _variants(have)
    labels = {v: LABELS.get(v, v.replace("baseline_", "image model alone, baseline ")) for v in names}
    name_w = min(max((len(s) for s in labels.values()), default=10), 52)
    first = next((r for r in revisions if r.metrics), None)
    lines = []
    for rev in revisions:
        m = rev.metrics or {}
        n = m.get("report.images")
        lines += ["", _cut(f"== {rev.label}" + (f", {n} report images" if n else "") + f": {rev.subject}", width)]
        if rev.metrics is None:
            lines.append(f"   no {METRICS} at this revision")
            continue
        base = first.metrics if first is not None and rev is not first else None
        lines.append(_cut(f"   {'variant':<{name_w}}  {'mIoU (%)':<22} {'hard-class mIoU (%)':<22} regions/image",
                          width))
        for v in names:
            cells = []
            for key in (metric(v), metric(v, "hard_mIoU")):
                val = m.get(key)
                text = _pct(val) + _interval(m, key, ("_ci_low", "_ci_high"))
                if base is not None and val is not None and base.get(key) is not None:
                    text += f" ({_pct(val - base[key], signed=True)})"
                cells.append(f"{text:<22}")
            regions = m.get(metric(v, "regions_per_image"))
            lines.append(_cut(f"   {labels[v][:name_w]:<{name_w}}  {cells[0]} {cells[1]} "
                              f"{'' if regions is None else f'{regions:.1f}'}".rstrip(), width))
        claims = [(c, label) for c, label in _claims([m]) if m.get(f"{c}.diff") is not None]
        if claims:
            lines.append(_cut(f"   {'difference, 95% interval':<{name_w}}  {'mIoU':<22} hard-class mIoU", width))
        for c, label in claims:
            all_ = _pct(m.get(f"{c}.diff"), signed=True) + _interval(m, f"{c}.", ("ci_low", "ci_high"), True)
            hard = (_pct(m.get(f"{c}.hard_diff"), signed=True)
                    + _interval(m, f"{c}.", ("hard_ci_low", "hard_ci_high"), True))
            lines.append(_cut(f"   {label[:name_w]:<{name_w}}  {all_:<22} {hard}".rstrip(), width))
    if first is not None and len(revisions) > 1:
        lines += ["", _cut(f"(changes in parentheses: against {first.label})", width)]
    return "\n".join(lines[1:]) + "\n"
