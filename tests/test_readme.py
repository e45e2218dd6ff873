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


def test_prefect_api_url_exported_before_server_start():
    """The UI asks the API at PREFECT_API_URL as the server saw it when it started: on any port but
    4200 it shows "Can't connect to Server API" unless the variable was exported first."""
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            lines = block.splitlines()
            starts = [i for i, line in enumerate(lines) if "prefect server start" in line]
            for i in starts:
                exports = [j for j, line in enumerate(lines) if line.startswith("export PREFECT_API_URL=")]
                assert exports and exports[0] < i, f"{doc.name}: export PREFECT_API_URL after the server:\n{block}"
                url = lines[exports[0]].split("=", 1)[1]
                port = re.search(r"--port\s+(\$\{?\w+\}?|\d+)", lines[i])
                assert port, f"{doc.name}: `prefect server start` without --port: {lines[i]}"
                assert f":{port.group(1)}/api" in url or "PORT" in url, (url, lines[i])


def test_started_server_ui_finds_its_api(prefect_server):
    """A server the project starts (tests, benches) on a free port, with PREFECT_API_URL exported
    first, tells its UI the API address on that port, not the default 4200."""
    import json
    import urllib.request

    settings = json.loads(urllib.request.urlopen(prefect_server.url[:-len("/api")] + "/ui-settings", timeout=10).read())
    assert settings["api_url"] == prefect_server.url
