"""The report page in a real browser: headless Chromium renders it, and every figure loads.

Needs Debian's ``chromium`` (``.ci/run`` installs it); skips with the reason when it is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from bench_suite.report import figures, render
from tests.report_data import two_runs

pytestmark = pytest.mark.browser

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found (install Debian's 'chromium' package; "
    ".ci/run does so where apt-get works)")


def browse(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"  # fresh each time
    assert CHROMIUM is not None
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser-report")
    return render.write_report(two_runs(), out, command="bench-suite report results/ -o out")


@needs_chromium
def test_screenshot_is_not_blank_and_shows_figures(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    # the page exactly as written, Content-Security-Policy included
    browse(tmp_path, report, f"--screenshot={shot}", "--window-size=1280,2000")
    with Image.open(shot) as img:
        assert img.size == (1280, 2000)
        rgb = img.convert("RGB")
    lo, hi = rgb.convert("L").getextrema()
    assert hi - lo > 150, "the screenshot is blank"
    colours = rgb.getcolors(maxcolors=1 << 22) or []
    assert len(colours) > 50
    # the figures' backend colours are on screen: the embedded PNGs were drawn, not blocked
    for backend in ("numpy", "torch-cpu"):
        target = tuple(int(figures.BACKEND_COLOURS[backend][i:i + 2], 16) for i in (1, 3, 5))
        near = sum(n for n, c in colours if sum(abs(a - b) for a, b in zip(c, target, strict=True)) < 30)
        assert near > 200, f"no {backend} colour in the screenshot"


@needs_chromium
def test_every_image_loads(report: Path, tmp_path: Path) -> None:
    page = report.read_text(encoding="utf-8")
    n_imgs = page.count("<img ")
    assert n_imgs >= 4
    # A test copy: the policy forbids scripts, so drop it, then report each image's natural size
    # in the title once the page has loaded; --dump-dom prints the DOM after the load event.
    probe = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    probe = probe.replace("</head>", (
        "<script>window.addEventListener('load', () => { document.title = 'IMGS:' + "
        "Array.from(document.images).map(i => i.complete ? i.naturalWidth + 'x' + "
        "i.naturalHeight : 'pending').join(','); });</script></head>"), 1)
    copy = tmp_path / "probe.html"
    copy.write_text(probe, encoding="utf-8")
    dom = browse(tmp_path, copy, "--dump-dom").stdout
    match = re.search(r"<title>IMGS:([^<]*)</title>", dom)
    assert match, "the probe did not run: " + dom[:300]
    sizes = match.group(1).split(",")
    expected = re.findall(r'<img [^>]*width="(\d+)" height="(\d+)"', page)
    assert sizes == [f"{w}x{h}" for w, h in expected] and len(sizes) == n_imgs
