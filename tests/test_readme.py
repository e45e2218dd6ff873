"""The README's recipes do what they say: forced reruns of one stage, the Prefect server's order."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "scaling.md", ROOT / "docs" / "design.md"]


def _commands(text: str) -> list[str]:
    """Every shell line of the fenced bash blocks and every inline `code` span."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        out += [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    out += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return out


def _dvc_repro_args(cmd: str) -> list[list[str]] | None:
    parts = []
    for piece in re.split(r"&&|;|\|", cmd):
        try:
            words = shlex.split(piece, comments=True)
        except ValueError:
            continue
        words = [w.rsplit("/", 1)[-1] if i == 0 else w for i, w in enumerate(words)]
        if words[:2] == ["dvc", "repro"]:
            parts.append(words[2:])
    return parts


def test_forced_stage_rerun_is_single_item():
    """`dvc repro -f <stage>` reruns everything upstream too (data generation, every model): a
    recipe that forces one stage says `-s` (--single-item)."""
    bad = []
    for doc in DOCS:
        for cmd in _commands(doc.read_text()):
            for args in _dvc_repro_args(cmd):
                flags = {a for a in args if a.startswith("-")}
                short = {c for a in flags if re.fullmatch(r"-[a-zA-Z]+", a) for c in a[1:]}
                forced = "--force" in flags or "f" in short
                single = "--single-item" in flags or "s" in short
                targets = [a for a in args if not a.startswith("-")]
                if forced and targets and not single:
                    bad.append(f"{doc.name}: {cmd}")
    assert not bad, bad

