"""Loading params files: YAML in, a validated :class:`~nightlab.config.schema.Params` out, and
every mistake as one :class:`~nightlab.errors.ConfigError` naming the file, the dotted key, the
value and the rule it breaks, e.g. ``params.yaml: hard_classes.threshold = 1.7: must be <= 1``.

Unknown keys are refused (a typo must not silently fall back to a default); a key that existed
once is told why it went and what to write instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nightlab.config.schema import Params
from nightlab.errors import ConfigError

# Keys that existed once and were removed: a params file that still sets one gets told why.
REMOVED = {
    "data.synthetic.workers": "it never did anything (generation shards run on orchestration.threads / dask_workers)",
    "hdm.crop_iou": "replaced by hdm.criterion",
    "hard_classes.split": "replaced by splits.select (source/split/domain selectors)",
    "hard_classes.domain": "replaced by splits.select (source/split/domain selectors)",
    "rdn.train.crop": "the RDN always trains on whole images",
    "region_model.train.crop": "the region model trains on box crops (region_model.region_size)",
}
# The one-source shorthand that data.sources replaced: one message for all of it (shorthand_message).
SHORTHAND = ("kind", "root", "splits", "encoding", "domain")


class _NotSet:
    """A key the file does not set (a rule about its default value)."""

    def __repr__(self) -> str:
        return "(not set)"


def _at(data, loc) -> Any:
    value = data
    for p in loc:
        if isinstance(value, dict):
            value = value.get(p, _NotSet())
        elif isinstance(value, (list, tuple)) and isinstance(p, int) and -len(value) <= p < len(value):
            value = value[p]
        # else: a union-branch tag such as 'tuple[int, ...]' names no data: stay on the same value
    return value


def shorthand_message(data: dict) -> str | None:
    """How to write an old ``data.kind``/``data.root`` file now, with its own values (or None)."""
    section = data.get("data") if isinstance(data.get("data"), dict) else {}
    old = {k: section[k] for k in SHORTHAND if k in section}
    if not old:
        return None
    kind = old.get("kind", "synthetic")
    if kind == "synthetic":
        rewrite = ("data.synthetic makes the splits with a non-zero scene count (data.synthetic.train, val, test); "
                   "delete these keys")
    elif kind == "none":
        rewrite = "data.sources alone names the data; delete these keys and set data.synthetic: null"
    else:
        entry = {"kind": kind, "root": old.get("root", "data/raw")}
        entry.update({k: old[k] for k in ("splits", "encoding", "domain") if k in old and old[k] != "auto"})
        flow = yaml.safe_dump({kind: entry}, default_flow_style=True, width=1000).strip()
        rewrite = f"write it as data.sources: {flow}, and data.synthetic: null if it is your only data"
    keys = ", ".join(f"data.{k}" for k in old)
    return f"  {keys}: the one-source shorthand was removed (data.sources is the one way to name data): {rewrite}"


def _format_error(source: str, data: dict, err: ValidationError) -> str:
    lines = [f"{source}: invalid parameters"]
    shorthand = shorthand_message(data)
    if shorthand:
        lines.append(shorthand)
    seen = set()
    for e in err.errors():
        # Drop pydantic's union/validator tags from the dotted key: only names and indices of the data.
        loc = [p for p in e["loc"] if isinstance(p, int) or not any(c in str(p) for c in "[]()")]
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            if shorthand and len(loc) == 2 and loc[0] == "data" and loc[1] in SHORTHAND:
                continue  # said once above
            why = REMOVED.get(key)
            msg = f"was removed: {why}" if why else "unknown key (a typo? see params.yaml for every key)"
        else:
            msg = e["msg"].replace("Value error, ", "")
        line = f"  {key} = {_at(data, loc)!r}: {msg}" if loc else f"  {msg}"  # a rule across sections: no one value
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def parse_params(data: dict | None, source: str = "params") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(source, data or {}, err)) from None


def read_params_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read params file: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data or {}


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_params_file(path), str(path))


def merge_overlay(base: dict, overlay: dict) -> dict:
    """``overlay`` (a profile) on top of ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merge_overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and v else v
    return out


def load_profile(path: str | Path) -> Params:
    """A profile is an overlay on the defaults: it names only what it changes."""
    defaults = Params().model_dump(mode="json")
    return parse_params(merge_overlay(defaults, read_params_file(path)), str(path))
