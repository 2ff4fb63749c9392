"""Read user tables (CSV, TSV, JSON, JSONL, Parquet) into (text, label) rows, refusing bad
input with a message that names the file, row, column and value."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from finetuning.errors import StageError

TEXT_FORMATS = {".csv", ".tsv", ".json", ".jsonl"}
# The split a name stands for (a file's name, a split column's value, a label folder's
# parent), as datasets and common layouts spell it.
SPLIT_NAMES = {"train": "train", "validation": "validation", "dev": "validation",
               "test": "test"}


@dataclass(frozen=True)
class Columns:
    """Which columns of a user table hold what (prepare's settings), and the label names."""

    text: str
    label: str
    labels: list[str]
    pair: str = ""   # prepare.text_pair_column: the second text of a pair ("" = none)
    split: str = ""  # prepare.split_column: which split each row belongs to ("" = none)

    @classmethod
    def of(cls, cfg) -> Columns:
        """The columns a `Prepare` section names."""
        return cls(cfg.text_column, cfg.label_column, cfg.labels, cfg.text_pair_column,
                   cfg.split_column)

    @property
    def required(self) -> list[str]:
        return [c for c in (self.text, self.pair, self.label, self.split) if c]

    @property
    def settings(self) -> str:
        """The params that name the required columns, for an error message."""
        keys = ["text_column", "text_pair_column" if self.pair else "",
                "label_column", "split_column" if self.split else ""]
        return " / ".join(f"prepare.{k}" for k in keys if k)


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


def class_names(path: Path, column: str) -> list[str] | None:
    """The names of a Hugging Face `ClassLabel` column, as `datasets` records them in a
    Parquet file's schema metadata (Hub splits are fetched that way); None otherwise."""
    if path.suffix.lower() != ".parquet":
        return None
    meta = (pq.read_schema(path).metadata or {}).get(b"huggingface")
    feature = json.loads(meta).get("info", {}).get("features", {}).get(column, {}) if meta \
        else {}
    return feature.get("names") if feature.get("_type") == "ClassLabel" else None


def label_map(names: list[str] | None, path: Path, columns: Columns) -> list[str]:
    """What integer labels mean: the ClassLabel's names (checked against prepare.labels,
    so index i is mapped by name, never by position), else prepare.labels themselves."""
    if names is None:
        return columns.labels
    if sorted(names) != sorted(columns.labels):
        raise StageError(f"{path}: column {columns.label!r} is a ClassLabel with names "
                         f"{names}, but prepare.labels is {columns.labels}; set prepare.labels "
                         "to the dataset's names (any order)")
    return names


def to_examples(frame: pd.DataFrame, path: Path, columns: Columns,
                names: list[str] | None = None) -> pd.DataFrame:
    """Select and check the columns; return a frame of text: str, label: int (the index
    in prepare.labels) and, when configured, text_pair: str and split: str."""
    require_columns(frame, path, columns.required, columns.settings)
    meaning = label_map(names, path, columns)
    out = {"text": text_cells(frame, path, columns.text).to_numpy()}
    if columns.pair:
        out["text_pair"] = text_cells(frame, path, columns.pair).to_numpy()
    indices = []
    for row, value in enumerate(frame[columns.label], start=1):
        index = label_index(value, meaning)
        if index is None:
            unlabelled = names is not None and value == -1  # datasets' mark of no label
            raise StageError(f"{path}: row {row}, column {columns.label!r} has label {value!r}; "
                             f"expected one of {meaning} or an index 0..{len(meaning) - 1} "
                             "(prepare.labels)" + ("; -1 marks an unlabelled row of a Hub "
                                                   "split: leave that split out with "
                                                   "fetch.hf_splits" if unlabelled else ""))
        indices.append(columns.labels.index(meaning[index]))
    out["label"] = indices
    if columns.split:
        out["split"] = [split_cell(v, path, row, columns.split)
                        for row, v in enumerate(frame[columns.split], start=1)]
    return pd.DataFrame(out)


def split_cell(value: object, path: Path, row: int, column: str) -> str:
    """A `prepare.split_column` cell as a split name; anything else is refused."""
    name = SPLIT_NAMES.get(str(value).strip().lower()) if isinstance(value, str) else None
    if name is None:
        raise StageError(f"{path}: row {row}, column {column!r} (prepare.split_column) holds "
                         f"{value!r}; expected one of {sorted(SPLIT_NAMES)}")
    return name
