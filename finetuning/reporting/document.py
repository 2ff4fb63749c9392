"""A tiny document model (sections of paragraphs, tables and images) and its two renderings:
Markdown with images beside it, and one self-contained HTML page (images inlined as
base64 PNG, styles inline, no script, no network)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass
class Table:
    """A header and rows of already formatted cells; numeric columns are right-aligned."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    """A PNG: a file beside report.md, inlined into report.html."""

    name: str
    png: bytes
    alt: str


@dataclass
class Code:
    """A block of code, shown as written."""

    text: str
    language: str = ""


MISSING = "—"  # the cell of a value that is not there
Block = str | Table | Image | Code  # a str is a paragraph (inline `code`, **bold** allowed)


@dataclass
class Section:
    """A titled list of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)


def fmt(value, digits: int | None = 4) -> str:
    """A table cell: ints with thousands separators, floats with `digits` decimals (None for
    `.6g`), MISSING for None."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}" if digits is None else f"{value:.{digits}f}"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1320px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.8em 0}th,td{border:1px solid #ccc;
padding:.25em .6em;vertical-align:top}th{background:#f3f3f3}td.n{text-align:right;
font-variant-numeric:tabular-nums}img{max-width:100%;display:block;margin:.8em 0}
code{background:#f3f3f3;padding:0 .2em}"""


def is_numeric(cell: str) -> bool:
    """True for cells such as `0.8123`, `+0.0150`, `-3`, `12.5%`, `1,056`."""
    try:
        float(cell.replace(",", "").rstrip("%"))
    except ValueError:
        return False
    return True


def _numeric_columns(table: Table) -> list[bool]:
    return [any(row[i] != MISSING for row in table.rows)
            and all(is_numeric(row[i]) for row in table.rows if row[i] != MISSING)
            for i in range(len(table.header))]


def markdown_cell(text: str) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table."""
    align = ["---:" if numeric else "---" for numeric in _numeric_columns(table)]
    lines = ["| " + " | ".join(map(markdown_cell, table.header)) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(map(markdown_cell, row)) + " |" for row in table.rows]
    return "\n".join(lines)


def to_markdown(title: str | None, sections: list[Section]) -> str:
    """The whole document as Markdown (no top heading without `title`); images referenced
    by file name."""
    parts = [f"# {title}", ""] if title else []
    for section in sections:
        parts += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(table_markdown(block))
            elif isinstance(block, Image):
                parts.append(f"![{block.alt}]({block.name})")
            elif isinstance(block, Code):
                parts.append(f"```{block.language}\n{block.text}\n```")
            else:
                parts.append(block)
            parts.append("")
    return "\n".join(parts)


def inline_html(text: str) -> str:
    """Escape a paragraph and turn its `code` and **bold** spans into tags."""
    out = html.escape(text)
    for mark, tag in (("**", "b"), ("`", "code")):
        pieces = out.split(mark)
        if len(pieces) % 2:  # balanced marks only
            out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
    return out


def table_html(table: Table) -> str:
    """An HTML table; numeric columns right-aligned."""
    numeric = _numeric_columns(table)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if numeric[i] else ""}>{html.escape(str(c))}</td>'
                         for i, c in enumerate(row)) + "</tr>"
        for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def block_html(block: Block) -> str:
    """One block as HTML; an image as a base64 data URI."""
    if isinstance(block, Table):
        return table_html(block)
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text)}</code></pre>"
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">'
    return f"<p>{inline_html(block)}</p>"


def to_html(title: str, sections: list[Section]) -> str:
    """The whole document as one self-contained HTML page."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [block_html(block) for block in section.blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
