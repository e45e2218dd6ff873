"""Which run an experiment report was made against, and what has changed in it since
(``nightlab report status``).

A report (the threshold sweep, the seeds study, the ablations) is made from metrics files of the
default run (``uses``: reports/metrics.json, reports/image/metrics.json). What it depends on is the
stages that wrote those files and every stage upstream of them, as dvc.lock records them: their
params, their outputs (by md5) and their other inputs (code, data sources). Its provenance keeps
that part of dvc.lock; a report is stale when one of those stages changed, and it says which params
(old -> new), outputs and inputs, stage by stage. A change to a stage the report never read (say a
baseline's) leaves it current.

Reports written before the stages were kept hold only the git revision and the md5 of dvc.lock:
their stages are read from dvc.lock at that revision when its md5 matches.
"""
from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

import yaml

# What each report reads from the default run, for reports whose provenance predates ``uses``.
REPORT_USES = {"sweep": ("reports/metrics.json",), "seeds": ("reports/metrics.json",),
               "ablations": ("reports/image/metrics.json", "reports/metrics.json")}
SHOWN = 4  # paths listed per stage and kind of change before "+N more"


def lock_md5(text: str | bytes) -> str:
    return hashlib.md5(text.encode() if isinstance(text, str) else text).hexdigest()


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def lock_stages(text: str) -> dict[str, dict]:
    """The stages of a dvc.lock's text, each as {"params": {key: value} (flattened), "deps": {path: md5},
    "outs": {path: md5}}, in the file's order."""
    data = yaml.safe_load(text) or {}
    stages = {}
    for name, s in (data.get("stages") or {}).items():
        params = {}
        for file, values in (s.get("params") or {}).items():
            prefix = "" if file == "params.yaml" else f"{file}:"
            params.update({f"{prefix}{k}": v for k, v in _flat(values or {}).items()})
        stages[name] = {"params": params,
                        "deps": {d["path"]: d.get("md5") or d.get("hash") for d in s.get("deps") or []},
                        "outs": {o["path"]: o.get("md5") or o.get("hash") for o in s.get("outs") or []}}
    return stages


def _inside(path: str, out: str) -> bool:
    return path == out or PurePosixPath(path).is_relative_to(PurePosixPath(out))


def producer(stages: dict, path: str) -> str | None:
    """The stage whose output ``path`` is (or lies inside)."""
    return next((n for n, s in stages.items() if any(_inside(path, o) for o in s["outs"])), None)


def used_stages(stages: dict, uses) -> list[str]:
    """The stages that wrote ``uses`` and every stage upstream of them, in dvc.lock's order."""
    todo = [p for p in (producer(stages, u) for u in uses) if p]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [p for p in (producer(stages, d) for d in stages[name]["deps"]) if p and p not in seen]
    return [n for n in stages if n in seen]


def snapshot(lock_text: str, uses) -> dict:
    """What a report's provenance keeps of dvc.lock: the stages it used, as :func:`lock_stages` reads them."""
    stages = lock_stages(lock_text)
    return {name: stages[name] for name in used_stages(stages, uses)}


def _short(v, width: int = 36) -> str:
    text = "removed" if v is _NONE else str(v)
    return text if len(text) <= width else text[: width - 3] + "..."


_NONE = object()


def changes(then: dict, now: dict) -> dict[str, list[tuple[str, list[str]]]]:
    """What changed, per stage of ``then`` (a :func:`snapshot`) in ``now`` (:func:`lock_stages`), in
    ``then``'s order: [(kind, items)] with kind ``params`` (``key old -> new``), ``outputs`` or
    ``code/inputs`` (the stage's inputs that no stage writes: code, data sources); unchanged stages
    are left out."""
    produced = {o for s in now.values() for o in s["outs"]} | {o for s in then.values() for o in s["outs"]}
    out = {}
    for name, old in then.items():
        new = now.get(name)
        if new is None:
            out[name] = [("stage", ["no longer in dvc.lock"])]
            continue
        found = []
        keys = sorted(set(old["params"]) | set(new["params"]))
        params = [f"{k} {_short(old['params'].get(k, _NONE)).replace('removed', 'unset')} -> "
                  f"{_short(new['params'].get(k, _NONE))}"
                  for k in keys if old["params"].get(k, _NONE) != new["params"].get(k, _NONE)]
        outs = [p for p in sorted(set(old["outs"]) | set(new["outs"])) if old["outs"].get(p) != new["outs"].get(p)]
        inputs = [p for p in sorted(set(old["deps"]) | set(new["deps"]))
                  if old["deps"].get(p) != new["deps"].get(p) and not any(_inside(p, o) for o in produced)]
        found += [(kind, items) for kind, items in (("params", params), ("outputs", outs), ("code/inputs", inputs))
                  if items]
        if found:
            out[name] = found
    return out


def format_changes(found: dict[str, list[tuple[str, list[str]]]], indent: int = 11, width: int = 120) -> list[str]:
    """:func:`changes` as lines of at most ``width`` characters: a stage's name, then one line per kind of
    change, listing as many items as fit and how many more there are."""
    name_w = max((len(n) for n in found), default=0) + 2
    lines = []
    for name, kinds in found.items():
        for i, (kind, items) in enumerate(kinds):
            head = " " * indent + (name if i == 0 else "").ljust(name_w) + f"{kind}: "
            shown, rest = [], len(items)
            for item in items:
                more = f" (+{rest - 1} more)" if rest > 1 else ""
                if len(head + "; ".join([*shown, item]) + more) > width and shown:
                    break
                shown.append(item)
                rest -= 1
            lines.append((head + "; ".join(shown) + (f" (+{rest} more)" if rest else ""))[:width])
    return lines
