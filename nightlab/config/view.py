"""Scoped reading: a stage sees the params through a view that allows only the keys its
dvc.yaml entry declares (docs/design.md 2)."""
from __future__ import annotations

from pydantic import BaseModel


class UndeclaredParam(AttributeError):
    """A stage read a params key that its dvc.yaml entry does not declare (DVC would not rerun it)."""


class ParamsView:
    """Read-only view of :class:`~nightlab.config.schema.Params` that allows only the declared keys.

    A stage gets ``ParamsView(params, keys_in_dvc_yaml)``: reading a key that dvc.yaml does not list
    for the stage raises :class:`UndeclaredParam` instead of silently making the stage depend on a
    value DVC does not watch. A declared key returns the real object (so library code sees plain
    config models); an ancestor of declared keys returns another view.
    """

    def __init__(self, obj, allowed, path: str = "", stage: str = "this stage", seen: set | None = None):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_allowed", tuple(allowed))
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_seen", seen if seen is not None else set())

    def _child(self, name: str, value):
        """``value`` under ``name`` if declared (recorded as read), a narrower view if it holds declared keys."""
        key = f"{self._path}.{name}" if self._path else name
        if any(key == a or key.startswith(a + ".") for a in self._allowed):
            self._seen.add(key)
            return value
        if any(a.startswith(key + ".") for a in self._allowed):
            return ParamsView(value, self._allowed, key, self._stage, self._seen)
        raise UndeclaredParam(f"{self._stage} reads params key {key!r}, which its dvc.yaml entry does not declare "
                              f"(declared: {', '.join(self._allowed)})")

    def __getattr__(self, name: str):
        if name.startswith("_"):  # dunder lookups (pickle, copy) and our own slots: not params
            raise AttributeError(name)
        value = getattr(self._obj, name)
        if callable(value) and not isinstance(value, BaseModel):
            raise UndeclaredParam(f"{self._stage}: call {name}() on a declared section, not on the params view")
        return self._child(name, value)

    def __getitem__(self, name: str):  # mappings such as data.sources
        return self._child(name, self._obj[name])

    def __setattr__(self, name, value):
        raise AttributeError("params are read-only")

    def __repr__(self) -> str:
        return f"ParamsView({self._path or 'params'}, allowed={list(self._allowed)})"

    @property
    def seen(self) -> set[str]:
        """The declared keys (or their sub-keys) read so far."""
        return self._seen
