#!/usr/bin/env python3
"""Headless-Chromium screenshots of local HTML pages, with the network blocked.

Used to check that generated pages (DVC plots, reports) render offline:

    python scripts/screenshot.py dvc_plots/index.html /tmp/plots.png --check

``screenshot()`` needs only the standard library; ``count_non_white()`` needs Pillow
(imported lazily).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")


class ChromiumNotFoundError(RuntimeError):
    """No chromium binary could be located."""


class ScreenshotError(RuntimeError):
    """Chromium ran but did not produce a screenshot."""


def find_chromium() -> str:
    """Return the path of a chromium binary or raise ChromiumNotFoundError."""
    env = os.environ.get("CHROMIUM")
    for cand in ((env,) if env else ()) + CHROMIUM_CANDIDATES:
        path = cand if os.path.isabs(cand) else shutil.which(cand)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ChromiumNotFoundError(
        "chromium not found (looked for $CHROMIUM, /usr/bin/chromium, and "
        "'chromium' / 'chromium-browser' on PATH); on Debian/Ubuntu install it "
        "with: apt-get install -y chromium"
    )


def chromium_args(
    html_path: Path, png_path: Path, profile_dir: str, width: int, height: int,
    virtual_time_ms: int,
) -> list[str]:
    """The chromium flags used for an offline, deterministic screenshot."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        # Block the network: every host name fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
        "--proxy-server=http://127.0.0.1:9",  # belt and braces: dead proxy
        "--proxy-bypass-list=<-loopback>",
        f"--user-data-dir={profile_dir}",
        f"--screenshot={png_path}",
        f"--window-size={width},{height}",
        f"--virtual-time-budget={virtual_time_ms}",
        html_path.as_uri(),
    ]


def screenshot(
    html_path: str | os.PathLike,
    png_path: str | os.PathLike,
    width: int = 1200,
    height: int = 1600,
    *,
    timeout: float = 60.0,
    virtual_time_ms: int = 5000,
) -> Path:
    """Render ``html_path`` with headless chromium (network blocked) to ``png_path``.

    Returns the PNG path. Raises ChromiumNotFoundError if chromium is absent,
    FileNotFoundError if the HTML is missing, ScreenshotError on timeout or
    when no PNG was written.
    """
    html = Path(html_path).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"HTML file not found: {html}")
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    chromium = find_chromium()

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium] + chromium_args(
            html, png, profile, width, height, virtual_time_ms
        )
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise ScreenshotError(
                f"chromium timed out after {timeout}s on {html}"
            ) from exc
    if not png.is_file() or png.stat().st_size == 0:
        tail = (proc.stderr or proc.stdout or "")[-2000:]
        raise ScreenshotError(
            f"chromium (rc={proc.returncode}) wrote no screenshot for {html}:\n{tail}"
        )
    return png


def count_non_white(png_path: str | os.PathLike, threshold: int = 250) -> int:
    """Number of pixels with any RGB channel below ``threshold`` (needs Pillow)."""
    from PIL import Image

    with Image.open(png_path) as img:
        rgb = img.convert("RGB")
        mask = rgb.point(lambda v: 255 if v < threshold else 0).convert("L")
        # "L" of the per-channel mask is non-zero where any channel is dark.
        mask = mask.point(lambda v: 255 if v > 0 else 0)
        return mask.histogram()[255]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("html", help="local HTML file to render")
    p.add_argument("png", help="output PNG path")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=1600)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds")
    p.add_argument("--virtual-time-ms", type=int, default=5000)
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the screenshot is (nearly) blank; needs Pillow")
    p.add_argument("--min-pixels", type=int, default=5000,
                   help="non-white pixels required by --check")
    a = p.parse_args(argv)
    try:
        png = screenshot(a.html, a.png, a.width, a.height, timeout=a.timeout,
                         virtual_time_ms=a.virtual_time_ms)
    except (ChromiumNotFoundError, ScreenshotError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(png)
    if a.check:
        n = count_non_white(png)
        print(f"non-white pixels: {n}")
        if n < a.min_pixels:
            print(f"error: page looks blank (< {a.min_pixels})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
