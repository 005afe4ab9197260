"""The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium) against a live service holding a finished job and a running one."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import AUTH, KEY, write_jsonl
from tests.service.live import LiveServer, free_port, slow_serve_command
from tests.service.test_live import server_env, wait_job

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def submit(server: LiveServer, data: Path, name: str, n: int) -> str:
    src = write_jsonl(data / name / "in.jsonl", n)
    body = {"inputs": [str(src)], "output": str(data / name / "out"), "shard_rows": 8, "chunk_docs": 4}
    response = httpx.post(f"{server.url}/v1/jobs", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_dashboard_in_chromium(browser, tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    # Each engine call sleeps 300 ms: the second job is still running while the page is read.
    server = LiveServer(
        slow_serve_command(port, 300),
        server_env(tiny_pair, tmp_path, data, "float32"),
        port,
        tmp_path / "server.log",
    )
    try:
        server.wait_ready(timeout=300)  # a loaded machine takes a while to import torch
        done = submit(server, data, "done", 12)
        assert wait_job(server, done, timeout=300)["state"] == "succeeded"
        export = httpx.post(
            f"{server.url}/v1/jobs/{done}/exports", json={"format": "hf"}, headers=AUTH, timeout=120
        )
        assert export.status_code == 202, export.text
        deadline = time.monotonic() + 120
        while httpx.get(export.headers["location"], headers=AUTH).json()["state"] != "succeeded":
            assert time.monotonic() < deadline, "the export never succeeded"
            time.sleep(0.1)
        running = submit(server, data, "running", 400)
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/v1/jobs/{running}", headers=AUTH).json()["state"] != "running":
            assert time.monotonic() < deadline, "the second job never started"
            time.sleep(0.1)

        browser.get(f"{server.url}/ui")
        assert "API key is not valid" in browser.page_source or "needs" in browser.page_source  # 401 body
        browser.get(f"{server.url}/ui/login")
        browser.find_element(By.ID, "key").send_keys(KEY)
        browser.find_element(By.ID, "sign-in").click()
        # click() returns before the login's redirect has loaded: wait for it (a timeout fails the test).
        WebDriverWait(browser, 30).until(lambda b: b.current_url.rstrip("/").endswith("/ui"))
        states = {
            row.get_attribute("id"): row.find_element(By.CLASS_NAME, "state").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
        }
        assert states == {f"job-{done}": "succeeded", f"job-{running}": "running"}
        running_row = browser.find_element(By.ID, f"job-{running}").text
        assert "scoring" in running_row or "writing" in running_row

        browser.find_element(By.LINK_TEXT, done).click()
        assert browser.find_element(By.ID, "state").text == "succeeded"
        assert "documents in / kept / with repeats" in browser.find_element(By.ID, "report").text
        images = browser.find_elements(By.CSS_SELECTOR, ".plots img")
        assert len(images) == 2
        for image in images:  # the PNGs really loaded, through the same key
            assert (
                browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
                > 100
            )
        # Every report carries the pair diagnostics now (corpus/diagnostics.py): the table must show them.
        assert "score_vs_teacher" in browser.find_element(By.ID, "diagnostics").text
        links = browser.find_element(By.ID, "links").text
        assert "manifest.json" in links and "hf export" in links
        if os.environ.get("REWEIGH_SCREENSHOT"):  # how docs/dashboard.png is made
            browser.save_screenshot(os.environ["REWEIGH_SCREENSHOT"])
    finally:
        server.stop()
