"""``params.yaml`` written out: the params with every key's description as a comment
(``nightlab params``). Only the command line uses it, so no stage depends on this file."""
from __future__ import annotations

import yaml
from pydantic import BaseModel

from nightlab.config.rows import RowSelector
from nightlab.config.schema import Params


def _scalar(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def _emit(model: BaseModel, data: dict, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    fields = type(model).model_fields
    for name, value in data.items():
        info = fields.get(name)
        sub = getattr(model, name, None)
        doc = (info.description or "") if info else ""
        if isinstance(sub, BaseModel) and not isinstance(sub, RowSelector):
            head = (type(sub).__doc__ or "").strip().splitlines()[0] if type(sub).__doc__ else ""
            lines.append(f"{pad}{name}:" + (f"  # {head}" if head and not doc else f"  # {doc}" if doc else ""))
            _emit(sub, value, indent + 1, lines)
        elif isinstance(value, dict) and value:  # data.sources: a mapping of sub-models
            lines.append(f"{pad}{name}:" + (f"  # {doc}" if doc else ""))
            for key, item in value.items():
                lines.append(f"{pad}  {key}:")
                _emit(sub[key], item, indent + 2, lines)
        else:
            text = f"{pad}{name}: {_scalar(value)}"
            lines.append(f"{text:<40}  # {doc}" if doc else text)


def params_yaml(params: Params, header: str = "") -> str:
    """``params`` as a complete, commented params.yaml (DVC looks up every key a stage names)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _emit(params, params.model_dump(mode="json"), 0, lines)
    return "\n".join(lines) + "\n"


DEFAULT_HEADER = """\
The one place for knobs, read by every stage (nightlab.config validates it once; an unknown key
or a value out of range stops the stage with a message naming the key). Every value here is the
default: regenerate with `nightlab params` after changing a default in nightlab/config/schema.py, or
start from a profile: `nightlab params --profile profiles/<name>.yaml`."""

