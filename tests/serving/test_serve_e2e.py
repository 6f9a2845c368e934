"""End to end: `rnncap serve` in a subprocess, the page driven by headless Chromium (Playwright):
upload a sample photo through the file input and read the caption the page shows."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from support.inference import ServerProcess, example_images, make_tiny_model


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").is_file():
        path = "/usr/bin/chromium"
    if path is None:
        pytest.skip("no chromium binary found (Debian: apt-get install chromium; .ci/run does it)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    server = ServerProcess(make_tiny_model(folder / "tiny"), folder / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.slow
def test_upload_in_the_browser_shows_the_api_caption(server, browser):
    photo = example_images()[0]
    response = httpx.post(
        f"{server.url}/caption",
        files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    expected = response.json()["results"][0]

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    page.set_input_files("#file", str(photo))
    page.wait_for_function(
        "document.getElementById('caption').textContent.trim().length > 0", timeout=90_000
    )
    shown = page.text_content("#caption").strip()
    assert shown and shown == expected["caption"]
    # one panel per word, each titled with its word and drawn on a canvas
    titles = page.eval_on_selector_all("#words figcaption", "els => els.map(e => e.textContent)")
    assert titles == expected["caption"].split()
    assert page.eval_on_selector("#main", "c => c.width > 0 && c.height > 0")
    assert "score" in page.text_content("#status")
    assert errors == []
    page.close()


@pytest.mark.slow
def test_the_page_reports_a_non_image(server, browser, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    page = browser.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error", timeout=60_000)
    assert "not an image" in page.text_content("#status")
    assert page.text_content("#caption").strip() == ""
    page.close()
