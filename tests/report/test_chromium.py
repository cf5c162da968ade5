"""The report renders in headless Chromium: no console errors, every image loads.

A copy of the page gets a probe script at the top of <head>: it records console errors,
uncaught errors and failed resource loads, and on ``load`` writes the natural width of every
<img> into the DOM, which ``--dump-dom`` prints. The report itself has no scripts.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium); the render test needs it"),
]

PROBE = """<script>
(function () {
  var errors = [];
  var origError = console.error;
  console.error = function () { errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); origError.apply(console, arguments); };
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window ? "failed to load " + (t.tagName || "?") + " " + String(t.src || t.href || "").slice(0, 60) : "error: " + e.message);
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("unhandled rejection: " + e.reason); });
  window.addEventListener("load", function () {
    var imgs = Array.prototype.map.call(document.images, function (i) { return {id: i.id, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}; });
    var out = document.createElement("pre");
    out.id = "render-probe";
    out.textContent = JSON.stringify({errors: errors, images: imgs});
    document.body.appendChild(out);
  });
})();
</script>"""


def render(page: Path, tmp_path: Path) -> tuple[dict, str]:
    """Load ``page`` (with the probe) in headless Chromium; the probe's findings and Chromium's stderr."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
        "--dump-dom", probed.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="render-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the page did not finish loading in Chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(unescape(m.group(1))), proc.stderr


def console_lines(stderr: str, page: Path) -> list[str]:
    """Chromium's logged console messages that come from the page."""
    return [l for l in stderr.splitlines() if "CONSOLE" in l and page.name in l]


def test_report_renders_without_errors_and_images_load(campaign_dir, tmp_path):
    from faultlab.report.html import build_report

    files = build_report(campaign_dir, confidence=0.95)
    probe, stderr = render(files.html, tmp_path)
    assert probe["errors"] == []
    assert console_lines(stderr, Path("probed.html")) == []
    assert len(probe["images"]) == 4
    for img in probe["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img


def test_probe_catches_a_broken_image(tmp_path):
    """The check can fail: a page whose image does not decode is reported."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head></head><body><img id="x" src="data:image/png;base64,AAAA"></body></html>')
    probe, _ = render(page, tmp_path)
    assert probe["images"][0]["w"] == 0
    assert any("failed to load IMG" in e for e in probe["errors"])


def test_compare_page_renders(campaign_dir, tmp_path):
    from faultlab.report.compare import compare_campaigns, write_comparison_html

    page = write_comparison_html(compare_campaigns(campaign_dir, campaign_dir), tmp_path / "compare.html")
    probe, _ = render(page, tmp_path)
    assert probe["errors"] == [] and probe["images"] and all(i["w"] > 0 for i in probe["images"])
