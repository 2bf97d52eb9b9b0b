"""A headless Chromium driven by selenium, for the tests that open varbayes's pages.

The browser is Debian's ``chromium`` with its ``chromium-driver`` (``.ci/run`` installs
them); ``VARBAYES_CHROMIUM`` and ``VARBAYES_CHROMEDRIVER`` point elsewhere. When either
(or selenium) is missing, the tests that need the browser are skipped with the reason.
Screenshots go to ``$VARBAYES_SCREENSHOTS`` when set (to look at them), else a temporary
folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Launch flags: headless, no sandbox (CI containers run as root), and nothing that
# reaches the network (no QUIC, no background, component or sync traffic).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
    "--force-device-scale-factor=1",
)


def _find(env: str, names: tuple[str, ...]) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.path.isfile(os.environ[env]) else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A selenium Chrome driver on a fresh profile; skips when the browser is missing."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    from selenium.webdriver.chrome.service import Service

    binary = _find("VARBAYES_CHROMIUM", ("chromium", "chromium-browser"))
    driver_path = _find("VARBAYES_CHROMEDRIVER", ("chromedriver",))
    if binary is None or driver_path is None:
        pytest.skip(
            "headless Chromium not available (need chromium and chromedriver on PATH, e.g. "
            "apt-get install chromium chromium-driver); browser tests skipped"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where a test saves its screenshots."""
    where = os.environ.get("VARBAYES_SCREENSHOTS")
    path = Path(where) if where else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path
