"""The tour's report in a real browser: it loads from file:// and every figure renders."""

from __future__ import annotations

from browser_helpers import console_errors, open_page

IMAGE_STATS = """
return Array.from(document.images, (img) => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let lo = 255, hi = 0;
  for (let i = 0; i < d.length; i += 4) {
    lo = Math.min(lo, d[i + 1]);
    hi = Math.max(hi, d[i + 1]);
  }
  return {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
          shown: img.getBoundingClientRect().width, lo: lo, hi: hi};
});
"""


def test_report_loads_offline_and_every_figure_renders(browser, quick_tour, screenshots):
    """No console error; each <img> decoded (naturalWidth > 0), shown, and not blank."""
    entries = open_page(browser, quick_tour.report)
    assert console_errors(entries) == [], entries
    stats = browser.execute_script(IMAGE_STATS)
    assert len(stats) == sum(len(s.figures) for s in quick_tour.sections) >= 12
    for i, s in enumerate(stats):
        assert s["complete"] and s["width"] > 0 and s["height"] > 0, (i, s)
        assert s["shown"] > 0, (i, s)
        assert s["hi"] - s["lo"] > 50, (i, s)  # not one flat colour
    browser.save_screenshot(str(screenshots / "tour_top.png"))
    for key in ("vi", "vae"):
        browser.execute_script(f"document.getElementById('{key}').scrollIntoView()")
        browser.save_screenshot(str(screenshots / f"tour_{key}.png"))
