"""The Prefect UI in a real browser (headless Chromium, `make browser` installs Debian's; driven by
tests/browser.py): after `nightlab schedule` and a run of its deployment, the UI shows the run's
stages, its metrics artifacts with their rows and the deployment's schedule; on a port other than
4200 the dashboard loads when PREFECT_API_URL was exported before the server started, as the README
orders it, and shows that it cannot reach the API when the server started first."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import urllib.request

import pytest
from browser import CHROMIUM, MISSING, Browser
from scaffold import BIN, stage_env, stop

from nightlab.distributed import free_port

pytestmark = pytest.mark.slow
NO_API = re.compile(r"Can't connect to Server API|Unable to connect to Prefect server")


def _page_text(url: str) -> str:
    """The page's visible text after its scripts ran (headless Chromium's rendered DOM)."""
    if CHROMIUM is None:
        pytest.skip(MISSING)
    with tempfile.TemporaryDirectory(prefix="nightlab-chromium-") as profile:
        res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", res.stdout, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


def test_the_ui_shows_the_scheduled_runs_stages_artifacts_and_schedule(scheduled_run):
    run, api, ui = scheduled_run.flow_run, scheduled_run.api, scheduled_run.ui
    assert run["state_type"] == "COMPLETED", f"{run['state']}\n{scheduled_run.log.read_text()[-4000:]}"
    artifacts = {a["key"]: a for a in api.post("/artifacts/filter",
                                                {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})}
    per_class, summary = artifacts["nightlab-per-class-iou"], artifacts["nightlab-metrics"]
    rows = json.loads(per_class["data"]) if isinstance(per_class["data"], str) else per_class["data"]
    assert len(rows) >= 19, rows  # one row per class, then the mIoU rows

    with Browser() as page:
        # The flow run: completed, and one task run per stage in its Task Runs tab (a click: the tab
        # in the URL is reset while the run loads).
        page.open(f"{ui}/runs/flow-run/{run['id']}")
        page.wait_for(run["name"], "Completed", "Task Runs")
        page.click("li.p-tab#task-runs")
        page.scroll_to(".task-run-list")
        page.wait_for(*scheduled_run.stages)

        page.open(f"{ui}/artifacts/artifact/{per_class['id']}")
        text = page.wait_for("nightlab-per-class-iou", f"{len(rows)} Items", rows[-1]["class"])
        shown = [r["class"] for r in rows if r["class"] not in text]
        assert not shown, f"rows not shown: {shown}"
        image_iou = [r["image"] for r in rows if r.get("image")]
        assert image_iou and all(v in text for v in image_iou), (image_iou, text[:3000])

        page.open(f"{ui}/artifacts/artifact/{summary['id']}")
        page.wait_for("NightLab mIoU (%)", "variant", "previous", "change", "image")

        page.open(f"{ui}/deployments/deployment/{scheduled_run.deployment['id']}")
        page.wait_for(scheduled_run.name, "pipeline", "At 03:00 AM every day", "Ready")


def test_the_ui_reaches_its_api_on_another_port(prefect_server):
    url = prefect_server.url[: -len("/api")]
    assert not url.endswith(":4200")
    text = _page_text(url + "/")
    assert "Dashboard" in text and not NO_API.search(text), text[:1000]


def test_a_server_started_before_the_export_shows_it_cannot_connect(tmp_path):
    """The failure the README's order avoids, so that the check above can see it."""
    if CHROMIUM is None:
        pytest.skip(MISSING)
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
        stop(proc)  # the server's own process group (started here)
