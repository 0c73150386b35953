"""The chat page ``med42 serve`` serves at ``/``, driven in a real headless browser (Debian's
``chromium`` and ``chromium-driver`` through selenium; nothing is downloaded): it shows the
disclaimer and the license state, streams an answer, and its Stop button ends the generation
on the server."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import med42_rs
import pytest
from test_server import serve

LAST = "const a = document.querySelectorAll('.assistant'); return a.length ? a[a.length - 1]"
"""JavaScript: the last answer on the page (followed by the property to read and a default)."""


def test_page_is_served_from_the_package(smollm2: Path) -> None:
    m = med42_rs.Model.load(smollm2, n_ctx=512)
    with serve(m, parallel=1) as s, urllib.request.urlopen(s.url + "/", timeout=30) as r:
        html = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html")
    assert 'id="stop"' in html and "/v1/chat/completions" in html and "/props" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # no CDN


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1000,700",
    ):
        opts.add_argument(arg)
    d = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def _until(cond: Callable[[], Any], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_page_streams_an_answer_and_stop_ends_it(browser: Any, smollm2: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    m = med42_rs.Model.load(smollm2, n_ctx=2048)
    with serve(m, parallel=1) as s:
        d.get(s.url + "/")
        el = d.find_element
        _until(lambda: el(By.ID, "disclaimer").text, what="the disclaimer")
        assert "not medical advice" in el(By.ID, "disclaimer").text
        assert "not gated" in el(By.ID, "license").text
        assert el(By.ID, "model").text == "test-model"
        el(By.ID, "input").send_keys("Tell me a long story about the history of medicine.")
        el(By.ID, "send").click()

        def answer() -> str:
            return str(d.execute_script(LAST + ".textContent : ''"))

        _until(lambda: len(answer()) > 0, what="the first tokens")
        first = answer()
        _until(lambda: len(answer()) > len(first) + 10, what="more tokens")  # it streams
        assert s.get("/health")["slots_processing"] == 1
        el(By.ID, "stop").click()
        _until(lambda: d.execute_script(LAST + ".dataset.done || '' : ''") == "stopped", what="the stop")
        health = s.wait_idle(timeout=10)  # the server stopped generating: the slot is free
        slot = s.get("/slots")[0]
        assert 0 < slot["n_decoded"] < 2048 - 40
        time.sleep(0.3)
        assert s.get("/health")["tokens_generated"] == health["tokens_generated"]
        assert answer().endswith("[stopped]")
        shot = Path(os.environ.get("MED42_SCREENSHOT_DIR", tmp_path)) / "server-chat-page.png"
        d.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000
