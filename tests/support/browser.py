"""A page opened in headless Chromium (Debian's ``chromium`` and ``chromium-driver``; ``make
test`` installs them), driven with selenium, its console and network logs at hand.

A browser download (``playwright install``) cannot work here; the packaged browser and its
driver can.  Missing, they fail the test with the command that installs them: never a skip.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".artifacts"  # screenshots (gitignored)
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2400",
)


class Page:
    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver = driver
        self.url = url

    def run(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]

    def network_requests(self) -> list[str]:
        """The URLs the page requested (requests of its document; the page itself left out, and
        the browser's own start-up pages)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                params = message["params"]
                url = params["request"]["url"]
                if params.get("documentURL") == self.url and url != self.url:
                    urls.append(url)
        return urls


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: apt-get install -y chromium chromium-driver (make test does it)"
    return found


@contextmanager
def open_page(path: Path, *, screenshot: str = "") -> Iterator[Page]:
    """``path`` (an HTML file) in a fresh headless Chromium profile; a screenshot of the whole
    page goes to ``.artifacts/<screenshot>`` when the block ends."""
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    profile = tempfile.mkdtemp(prefix="prodloop-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(_binary("chromedriver")))
    try:
        url = path.resolve().as_uri()
        driver.get(url)
        page = Page(driver, url)
        yield page
        if screenshot:
            ARTIFACTS.mkdir(exist_ok=True)
            height = int(driver.execute_script("return document.body.scrollHeight"))
            driver.set_window_size(1280, max(800, min(height, 16000)))
            driver.save_screenshot(str(ARTIFACTS / screenshot))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
