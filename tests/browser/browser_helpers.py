"""Reading a page in the browser: console entries, canvas pixels, animation frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def open_page(driver, path: Path) -> list[dict]:
    """Load ``path`` from file:// and return the console entries it logged while loading."""
    driver.get_log("browser")  # drop earlier pages' entries
    driver.get(Path(path).resolve().as_uri())
    return driver.get_log("browser")


def console_errors(entries: list[dict]) -> list[dict]:
    """The console entries at level SEVERE (errors, uncaught exceptions, failed loads)."""
    return [e for e in entries if e.get("level") == "SEVERE"]


def canvas_grey(driver, canvas_id: str) -> np.ndarray:
    """The red channel of a canvas as (height, width) grey levels 0..255 (getImageData)."""
    w, h, data = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "return [c.width, c.height, Array.from(d)];",
        canvas_id,
    )
    return np.asarray(data, dtype=np.float64).reshape(h, w, 4)[..., 0]


def next_frames(driver, n: int = 2) -> None:
    """Wait until the page has drawn ``n`` more animation frames."""
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; let k = arguments[0];"
        "function f() { if (--k <= 0) done(); else requestAnimationFrame(f); }"
        "requestAnimationFrame(f);",
        n,
    )
