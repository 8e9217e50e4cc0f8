"""The web app in a real browser: playwright drives headless Debian chromium against scripts/app.py started
with the tiny random SAM 3 on a free local port. Skipped (with the reason) without chromium or playwright;
.ci/run installs both."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed (requirements-dev.txt)"
)
if not Path(CHROMIUM).is_file():
    pytest.skip("chromium not installed (apt-get install -y chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tiny_sam3_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(REPO / "scripts" / "app.py"), "--model_path", str(tiny_sam3_dir)]
    cmd += ["--device", "cpu", "--dtype", "fp32", "--port", str(port)]
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"app exited: {(tmp_path / 'app.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("app did not answer within 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def result_doc(page) -> dict:
    return json.loads(page.locator("#result_json textarea").input_value())


def test_upload_run_rethreshold_and_corrupt_file(app_url, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(app_url)
        page.locator("#upload input[type=file]").set_input_files(str(REPO / "assets" / "demo_scratch.png"))
        page.locator("#run").click()
        page.wait_for_function(
            "() => (document.querySelector('#result_json textarea') || {}).value?.includes('image_score')",
            timeout=120_000,
        )
        page.locator("#overlay img").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "1_run.png"), full_page=True)
        first = result_doc(page)
        assert 0.0 <= first["image_score"] <= 1.0 and first["mask_threshold"] == 0.5
        mask_src = page.locator("#mask img").get_attribute("src")

        page.locator("#mask_slider input[type=range]").fill("0")  # every map value is >= 0
        page.wait_for_function(
            "() => JSON.parse(document.querySelector('#result_json textarea').value).mask_threshold === 0",
            timeout=60_000,
        )
        page.screenshot(path=str(tmp_path / "2_slider.png"), full_page=True)
        second = result_doc(page)
        assert second["mask_pixels"] == 512 * 512 != first["mask_pixels"]
        assert second["engine_calls"] == first["engine_calls"]  # no new SAM 3 forward
        assert second["image_score"] == first["image_score"]
        page.wait_for_function(f"() => document.querySelector('#mask img').src !== {json.dumps(mask_src)}")

        page.reload()  # a fresh session: the file box is empty again
        page.locator("#upload input[type=file]").set_input_files(str(broken))
        page.locator("#run").click()
        page.wait_for_function(
            "() => document.querySelector('#status').innerText.includes('Error')", timeout=60_000
        )
        page.screenshot(path=str(tmp_path / "3_corrupt.png"), full_page=True)
        assert "broken.png" in page.locator("#status").inner_text()
        browser.close()
