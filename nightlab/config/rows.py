"""The row-selector grammar of ``splits``: ``source/split/domain`` with shell wildcards
(docs/design.md 2.4)."""
from __future__ import annotations

import fnmatch

from pydantic import BaseModel, ConfigDict


class RowSelector(BaseModel):
    """``source/split/domain`` with shell wildcards, e.g. ``nightcity/val/night`` or ``*/train/*``."""
    model_config = ConfigDict(frozen=True)
    source: str
    split: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> RowSelector:
        parts = text.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{text!r} is not source/split/domain (use * for any, e.g. '*/val/night')")
        if parts[2] not in ("day", "night", "*"):
            raise ValueError(f"{text!r}: domain must be day, night or *")
        return cls(source=parts[0], split=parts[1], domain=parts[2])

    def __str__(self) -> str:
        return f"{self.source}/{self.split}/{self.domain}"

    def matches(self, source: str, split: str, domain: str) -> bool:
        return (fnmatch.fnmatchcase(source, self.source) and fnmatch.fnmatchcase(split, self.split)
                and fnmatch.fnmatchcase(domain, self.domain))


def selectors(*texts: str) -> tuple[RowSelector, ...]:
    """``selectors("*/val/night")``: RowSelectors from their text, for code and tests."""
    return tuple(RowSelector.parse(t) for t in texts)


def _may_meet(a: str, b: str) -> bool:
    return a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a)


def shared_rows(select, report) -> list[str]:
    """Report selectors that can match rows of the selection split (then they are not held out)."""
    def meet(r, s) -> bool:
        return all(_may_meet(x, y) for x, y in zip((r.source, r.split, r.domain), (s.source, s.split, s.domain)))

    return sorted({str(r) for r in report for s in select if meet(r, s)})
