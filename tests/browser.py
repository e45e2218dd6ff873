"""A real browser for the UI tests: headless Chromium (Debian's, `make browser`) driven over the
Chrome DevTools Protocol, so a test can open a page, click a tab and read what the page shows once
its scripts have rendered it (a single-page app fills its DOM after load, and Prefect's lists render
only what is scrolled into view)."""
from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from scaffold import stop
from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "no chromium here: `make browser` (as root) installs Debian's; the Prefect UI was not checked"


class Browser:
    """One headless Chromium with one page; a context manager that always ends the browser (a page
    left open keeps polling its API and burning CPU)."""

    def __init__(self, timeout: float = 60):
        if CHROMIUM is None:
            pytest.skip(MISSING)
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="nightlab-chromium-"))
        log = self.profile / "stderr.log"
        with open(log, "w") as err:
            # A tall window: virtual scrollers render the rows that are in view, so all of them are.
            self.proc = subprocess.Popen(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={self.profile / 'user'}", "--remote-debugging-port=0", "--window-size=1400,4000",
                 "about:blank"], stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            port = self._devtools_port(log)
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next(p for p in pages if p["type"] == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        except BaseException:
            self.close()
            raise
        self.ids = itertools.count(1)

    def _devtools_port(self, log: Path) -> str:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", log.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}): {log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"chromium did not open its DevTools port in {self.timeout} s: {log.read_text()[-2000:]}")

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # events arrive in between; the reply carries our id
            msg = json.loads(self.ws.recv(timeout=self.timeout))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        """The value of a JavaScript expression in the page."""
        res = self._call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, url: str) -> None:
        self._call("Page.navigate", url=url)

    def text(self) -> str:
        """What the page shows: its rendered text (hidden elements excluded)."""
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, *needles: str, timeout: float | None = None) -> str:
        """The page's text once every needle is shown; fails with what it showed instead."""
        deadline = time.time() + (timeout or self.timeout)
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.time() > deadline:
                raise AssertionError(f"the page never showed {missing}; it showed:\n{text[:3000]}")
            time.sleep(0.5)

    def click(self, selector: str) -> None:
        found = self.js(f"(e => e ? (e.scrollIntoView(), e.click(), true) : false)"
                        f"(document.querySelector({json.dumps(selector)}))")
        assert found, f"no element {selector!r} on the page:\n{self.text()[:2000]}"

    def scroll_to(self, selector: str) -> None:
        self.js(f"(e => e && e.scrollIntoView())(document.querySelector({json.dumps(selector)}))")

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        stop(self.proc, grace_s=10)  # chromium's own process group, renderers included
        shutil.rmtree(self.profile, ignore_errors=True)
