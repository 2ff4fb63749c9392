"""Writing the report folder: report.md with its PNGs beside it, one self-contained
report.html, and summary.md (the summary and metrics sections alone, which the Prefect
flow shows as its run's artifact)."""
from __future__ import annotations

import logging
from pathlib import Path

from finetuning.reporting.document import Image, Section, to_html, to_markdown

log = logging.getLogger(__name__)

TITLE = "Fine-tuning report"
SUMMARY_FILE = "summary.md"
SUMMARY_SECTIONS = 2  # summary, metrics: what a run's artifact shows
SIZE_LIMIT = 5 * 2**20  # report.html stays small enough to mail or attach


def write_report(sections: list[Section], out: Path) -> int:
    """Write the report files into `out`; returns the HTML page's size in bytes."""
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Image):
                (out / block.name).write_bytes(block.png)
    (out / "report.md").write_text(to_markdown(TITLE, sections), encoding="utf-8")
    (out / SUMMARY_FILE).write_text(to_markdown(None, sections[:SUMMARY_SECTIONS]),
                                    encoding="utf-8")
    page = to_html(TITLE, sections).encode("utf-8")
    (out / "report.html").write_bytes(page)
    if len(page) > SIZE_LIMIT:
        log.warning("report.html is %.1f MB (over %d MB)", len(page) / 2**20,
                    SIZE_LIMIT // 2**20)
    return len(page)
