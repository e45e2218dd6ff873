"""The Prefect UI in a real browser (headless Chromium, `make browser` installs Debian's): on a port
other than 4200 its dashboard loads when PREFECT_API_URL was exported before the server started, as
the README orders it, and shows that it cannot reach the API when the server started first."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest
from scaffold import BIN, stage_env

from nightlab.distributed import free_port

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_API = re.compile(r"Can't connect to Server API|Unable to connect to Prefect server")


def _page_text(url: str) -> str:
    """The page's visible text after its scripts ran (headless Chromium's rendered DOM)."""
    if CHROMIUM is None:
        pytest.skip("no chromium here: `make browser` (as root) installs Debian's; the Prefect UI was not checked")
    with tempfile.TemporaryDirectory(prefix="nightlab-chromium-") as profile:
        res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", res.stdout, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


def test_the_ui_reaches_its_api_on_another_port(prefect_server):
    url = prefect_server.url[: -len("/api")]
    assert not url.endswith(":4200")
    text = _page_text(url + "/")
    assert "Dashboard" in text and not NO_API.search(text), text[:1000]


def test_a_server_started_before_the_export_shows_it_cannot_connect(tmp_path):
    """The failure the README's order avoids, so that the check above can see it."""
    if CHROMIUM is None:
        pytest.skip("no chromium here: `make browser` (as root) installs Debian's; the Prefect UI was not checked")
    port = free_port()
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=stage_env(None, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "prefect server did not start"
                time.sleep(0.5)
        assert NO_API.search(_page_text(f"http://127.0.0.1:{port}/"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (started here)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
