#!/usr/bin/env python3
"""Check that the report and the `dvc plots show` page render offline, with pictures.

Run from the repository root after `dvc repro`:

    .venv/bin/python scripts/check_render.py

It renders `reports/report.html` and a fresh `dvc plots show` page in headless Chromium
with the network blocked (scripts/screenshot.py), and fails unless each page has enough
non-white pixels (anything drawn) and enough coloured pixels (curves and images: text and
table rules are grey). It also checks that the report is self-contained and under 5 MB.
Screenshots are kept in the output folder (default: a temporary one) for a look.
"""
from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot import count_non_white, screenshot  # noqa: E402

log = logging.getLogger("check_render")

REPORT_LIMIT = 5 * 2**20
# A blank page or a page of text only stays far below these; one drawn chart exceeds both.
MIN_NON_WHITE = 20_000
MIN_COLOURED = 5_000
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


@dataclass
class Rendered:
    """What a screenshot of one page shows."""

    page: Path
    png: Path
    non_white: int
    coloured: int

    @property
    def ok(self) -> bool:
        """True when the page drew pictures, not just text."""
        return self.non_white >= MIN_NON_WHITE and self.coloured >= MIN_COLOURED


def count_coloured(png: Path, min_saturation: int = 60) -> int:
    """Pixels whose channels differ by more than `min_saturation` (not white, grey, black)."""
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > min_saturation).sum())


def render(page: Path, png: Path, height: int = 4000) -> Rendered:
    """Screenshot `page` offline (1200 px wide) and count what it shows."""
    screenshot(page, png, width=1200, height=height, timeout=120)
    return Rendered(page, png, count_non_white(png), count_coloured(png))


def report_problems(report: Path) -> list[str]:
    """Why `report` is not a self-contained page under the size limit (empty: it is)."""
    if not report.is_file():
        return [f"{report} not found: run `dvc repro` first"]
    text = report.read_text(encoding="utf-8")
    problems = []
    if report.stat().st_size > REPORT_LIMIT:
        problems.append(f"{report} is {report.stat().st_size / 2**20:.1f} MB (limit 5 MB)")
    if EXTERNAL.search(text):
        problems.append(f"{report} references a network resource: {EXTERNAL.search(text)[0]}")
    return problems


def plots_page(repo: Path, out: Path, dvc: str, revs: list[str] | None = None) -> Path:
    """Write `dvc plots show` (or `dvc plots diff REVS`) of `repo` into `out`."""
    command = [dvc, "plots", "diff", *revs] if revs else [dvc, "plots", "show"]
    out.mkdir(parents=True, exist_ok=True)  # dvc creates only the last folder
    subprocess.run([*command, "--out", str(out)], cwd=repo, check=True, capture_output=True,
                   text=True)
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    """Check the report and the plots page; print what was seen; 0 when both pass."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository root")
    parser.add_argument("--report", default="reports/report.html", help="relative to --repo")
    parser.add_argument("--out", type=Path, help="folder for pages and screenshots")
    parser.add_argument("--dvc", default=str(Path(sys.executable).parent / "dvc"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or Path(tempfile.mkdtemp(prefix="check-render-"))
    report = args.repo / args.report
    problems = report_problems(report)
    pages = [(report, out / "report.png")] if not problems else []
    pages.append((plots_page(args.repo, out / "plots", args.dvc), out / "plots.png"))
    for page, png in pages:
        seen = render(page, png)
        log.info("%s: %d non-white, %d coloured pixels (screenshot %s)", page, seen.non_white,
                 seen.coloured, png)
        if not seen.ok:
            problems.append(f"{page} looks blank or has no pictures (need {MIN_NON_WHITE} "
                            f"non-white and {MIN_COLOURED} coloured pixels)")
    if report.is_file():
        log.info("%s: %.0f kB", report, report.stat().st_size / 1024)
    for problem in problems:
        log.error("FAIL: %s", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
