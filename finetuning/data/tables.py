"""Read user tables (CSV, TSV, JSON, JSONL, Parquet) into (text, label) rows, refusing bad
input with a message that names the file, row, column and value."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from finetuning.errors import StageError

TEXT_FORMATS = {".csv", ".tsv", ".json", ".jsonl"}


def decode_utf8(data: bytes, name: str | Path) -> str:
    """`data` as text; refuse bytes that are not UTF-8, naming the line and byte of the first
    bad one."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise StageError(f"{name}: line {line} is not valid UTF-8 (byte 0x{data[err.start]:02x} "
                         f"at offset {err.start}); re-save the file as UTF-8") from None


def check_utf8(path: Path) -> None:
    """Refuse a text file that is not UTF-8 (see decode_utf8)."""
    decode_utf8(path.read_bytes(), path)


def read_table(path: Path) -> pd.DataFrame:
    """Read one table file by its suffix; BOM, CRLF and quoted newlines are handled."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise StageError(f"{path} is empty")
    if suffix in TEXT_FORMATS:
        check_utf8(path)
    try:
        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding="utf-8-sig",
                                dtype=str, keep_default_na=False,
                                quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL)
        elif suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")
        elif suffix == ".json":
            frame = pd.read_json(path, dtype=False, encoding="utf-8-sig")
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise StageError(f"{path}: unsupported file type {suffix!r}")
    except StageError:
        raise
    except Exception as err:  # pandas/pyarrow raise many types; the file name is what helps
        raise StageError(f"{path} could not be read as {suffix[1:].upper()}: {err}") from err
    if frame.empty:
        raise StageError(f"{path} has a header but no rows")
    return frame


def label_index(value: object, labels: list[str]) -> int | None:
    """Map a label cell (a name from `labels`, or its integer index) to the index; None
    for anything else: NaN, null, inf, a fraction, digits other than ASCII ("²", "١")."""
    if isinstance(value, str):
        text = value.strip()
        if text in labels:
            return labels.index(text)
        if not (text.isascii() and text.lstrip("-").isdigit()):
            return None
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 <= value < len(labels) else None


def require_columns(frame: pd.DataFrame, path: Path | str, columns: list[str],
                    where: str) -> None:
    """Refuse a table without `columns`, naming the setting (`where`) and what it has."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StageError(f"{path}: missing column(s) {missing} ({where}); the file has "
                         f"columns {list(frame.columns)}")


def text_cells(frame: pd.DataFrame, path: Path | str, column: str) -> pd.Series:
    """The column as strings (a missing cell is ""); a cell that is not text is refused
    with its row."""
    texts = frame[column]
    for row, value in enumerate(texts, start=1):
        if not (isinstance(value, str) or value is None or pd.isna(value)):
            raise StageError(f"{path}: row {row}, column {column!r} holds "
                             f"{type(value).__name__} {value!r}; expected text "
                             f"(column dtype {texts.dtype})")
    return texts.fillna("").astype(str)


def to_examples(frame: pd.DataFrame, path: Path, text_column: str, label_column: str,
                labels: list[str]) -> pd.DataFrame:
    """Select and check the text and label columns; return a frame of (text: str, label: int)."""
    require_columns(frame, path, [text_column, label_column],
                    "prepare.text_column / prepare.label_column")
    texts = text_cells(frame, path, text_column)
    indices = []
    for row, value in enumerate(frame[label_column], start=1):
        index = label_index(value, labels)
        if index is None:
            raise StageError(f"{path}: row {row}, column {label_column!r} has label {value!r}; "
                             f"expected one of {labels} or an index 0..{len(labels) - 1} "
                             "(prepare.labels)")
        indices.append(index)
    return pd.DataFrame({"text": texts.to_numpy(), "label": indices})


def read_examples(folder: Path, text_column: str, label_column: str, labels: list[str],
                  origin: str | None = None) -> pd.DataFrame:
    """Read and concatenate every table in `folder` (sorted by name) as (text, label). An
    error names the fetched file and row and, when known, the user's own source."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise StageError(f"no data files in {folder}; run the fetch stage first")
    try:
        frames = [to_examples(read_table(p), p, text_column, label_column, labels)
                  for p in files]
    except StageError as err:
        raise StageError(f"{err} (fetched from {origin})" if origin else str(err)) from None
    return pd.concat(frames, ignore_index=True)
