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
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture(scope="module")
def app_url(tiny_sam3_dir, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("app")
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


def wait_done(page, timeout: int = 120_000) -> None:
    """Until the status says a Run finished (or failed)."""
    page.wait_for_function(
        "() => /Done: |Error/.test(document.querySelector('#status').innerText)", timeout=timeout
    )


def downloaded_json(page, app_url: str) -> dict:
    """results.json fetched through its link in the downloads box, as a browser user would."""
    link = page.locator("#downloads a[download='results.json']")
    link.wait_for(timeout=30_000)
    with urllib.request.urlopen(urljoin(app_url, link.get_attribute("href")), timeout=10) as answer:
        return json.loads(answer.read())


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
        assert first["visual"] == "none" and first["image"] == "demo_scratch.png"
        downloaded = downloaded_json(page, app_url)
        assert [d["image_score"] for d in downloaded["images"]] == [first["image_score"]]
        assert page.locator("#downloads a[download='demo_scratch_mask.png']").count() == 1
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


def test_two_images_strategy_and_references(app_url, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("part_a.png", "part_b.png", "good.png"):
        paths.append(tmp_path / name)
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(paths[-1])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(app_url)
        page.locator("#upload input[type=file]").set_input_files([str(paths[0]), str(paths[1])])
        page.locator("#run").click()
        wait_done(page)
        page.screenshot(path=str(tmp_path / "1_two.png"), full_page=True)
        assert "Done: 2 image(s)" in page.locator("#status").inner_text()
        downloaded = downloaded_json(page, app_url)
        assert [d["image"] for d in downloaded["images"]] == ["part_a.png", "part_b.png"]
        assert page.locator("#downloads a[download$='_mask.png']").count() == 2
        assert result_doc(page)["image"] == "part_a.png"
        calls = result_doc(page)["engine_calls"]
        page.locator("#image_select input").click()
        page.get_by_role("option", name="part_b.png").click()
        page.wait_for_function(
            "() => JSON.parse(document.querySelector('#result_json textarea').value).image === 'part_b.png'",
            timeout=60_000,
        )
        assert result_doc(page)["engine_calls"] == calls  # another image shown from the cache
        assert "defect on the object" not in page.locator("#presence").inner_text()

        page.locator("#strategy").get_by_label("contextual").check()
        page.locator("#run").click()
        page.wait_for_function(
            "() => document.querySelector('#presence').innerText.includes('defect on the object')",
            timeout=120_000,
        )
        page.screenshot(path=str(tmp_path / "2_contextual.png"), full_page=True)
        assert result_doc(page)["prompts"][0] == "defect on the object"

        page.locator("#references input[type=file]").set_input_files(str(paths[2]))
        page.locator("#run").click()
        page.wait_for_function(
            "() => (document.querySelector('#result_json textarea') || {}).value?.includes('fewshot')",
            timeout=120_000,
        )
        page.screenshot(path=str(tmp_path / "3_fewshot.png"), full_page=True)
        doc = result_doc(page)
        assert doc["visual"] == "fewshot" and doc["references"] == ["good.png"]
        assert {d["visual"] for d in downloaded_json(page, app_url)["images"]} == {"fewshot"}
        browser.close()
