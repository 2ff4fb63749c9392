"""The layouts a data folder can have, read into one frame of examples.

* tables (CSV, TSV, JSON, JSONL, Parquet), pooled: every row is data; prepare splits it;
* tables named by split: `train.*`, `validation.*` (or `dev.*`), `test.*` keep their
  split (so do Hub shards like `train-00000-of-00001.parquet` and the Hub splits fetch
  writes as `<split>.parquet`);
* tables with a `prepare.split_column` naming each row's split;
* label folders: `<label>/*.txt` (pooled) or `<split>/<label>/*.txt` (IMDB's aclImdb,
  scikit-learn's `load_files`), one text per file, label names from the folder names.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from finetuning.data.tables import (SPLIT_NAMES, Columns, class_names, decode_utf8,
                                    read_table, to_examples)
from finetuning.errors import StageError

log = logging.getLogger(__name__)

FETCH_PREFIX = re.compile(r"^\d{3}-")  # fetch numbers the tables it copies: 000-<name>
SPLIT_FILE = re.compile(r"^(train|validation|dev|test)(?:[-_.]|$)", re.IGNORECASE)


def file_split(path: Path) -> str | None:
    """The split a table file's name stands for (`train.csv`, `000-dev.jsonl`,
    `test-00000-of-00001.parquet`), or None."""
    match = SPLIT_FILE.match(FETCH_PREFIX.sub("", path.name))
    return SPLIT_NAMES[match.group(1).lower()] if match else None


def by_split(folders: list[Path]) -> bool:
    """Whether these top-level folders are splits (`train/`, `test/`, ...), not labels."""
    return bool(folders) and all(f.name.lower() in SPLIT_NAMES for f in folders)


def label_folder_files(root: Path) -> list[Path]:
    """The text files of a label-folder layout under `root`, relative to it: the `.txt`
    files exactly one folder (the label) below the top, or below a split folder. Other
    files (aclImdb's README, vocabularies, `urls_*.txt`) are not data."""
    folders = [p for p in root.iterdir() if p.is_dir()]
    depth = 3 if by_split(folders) else 2
    return sorted(p.relative_to(root) for p in root.rglob("*.txt")
                  if p.is_file() and len(p.relative_to(root).parts) == depth)


def read_examples(folder: Path, columns: Columns, origin: str | None = None) -> pd.DataFrame:
    """Every example in `folder` as text, label[, text_pair] and split ("" where the
    layout names none). An error names the file and row and, when known, the user's
    own source (`origin`)."""
    try:
        return read_layout(folder, columns)
    except StageError as err:
        raise StageError(f"{err} (fetched from {origin})" if origin else str(err)) from None


def read_layout(folder: Path, columns: Columns) -> pd.DataFrame:
    """read_examples without the origin: tables, or label folders when there are folders."""
    if any(p.is_dir() for p in folder.iterdir()):
        return read_label_folders(folder, columns)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise StageError(f"no data files in {folder}; run the fetch stage first")
    frames = [to_examples(read_table(p), p, columns, class_names(p, columns.label))
              for p in files]
    if columns.split:
        return pd.concat(frames, ignore_index=True)
    splits = [file_split(p) for p in files]
    named = [p.name for p, split in zip(files, splits) if split]
    if named and len(named) < len(files):
        others = [p.name for p, split in zip(files, splits) if not split]
        raise StageError(f"{folder}: {named} are named by split but {others} are not; name "
                         "every file train.*, validation.* (or dev.*) or test.*, or none")
    return pd.concat([f.assign(split=s or "") for f, s in zip(frames, splits)],
                     ignore_index=True)


def read_label_folders(folder: Path, columns: Columns) -> pd.DataFrame:
    """`<label>/*.txt` or `<split>/<label>/*.txt` as examples."""
    if columns.pair or columns.split:
        raise StageError(f"{folder} is a label-folder layout (one text per file): "
                         "prepare.text_pair_column and prepare.split_column need tables")
    top = sorted(p for p in folder.iterdir() if p.is_dir())
    groups = [(SPLIT_NAMES[p.name.lower()], p) for p in top] if by_split(top) else [("", folder)]
    return pd.concat([read_label_folder(root, split, columns) for split, root in groups],
                     ignore_index=True)


def read_label_folder(root: Path, split: str, columns: Columns) -> pd.DataFrame:
    """One folder per label under `root`, each holding `.txt` files."""
    found = {p.name: p for p in root.iterdir() if p.is_dir()}
    missing = [name for name in columns.labels if name not in found]
    if missing:
        raise StageError(f"{root}: no folder for label(s) {missing}; expected one folder of "
                         f".txt files per prepare.labels entry {columns.labels}, found "
                         f"{sorted(found)}")
    skipped = sorted(set(found) - set(columns.labels))
    if skipped:  # aclImdb's train/unsup: unlabelled reviews
        log.warning("%s: folders %s are not in prepare.labels %s; not read", root, skipped,
                    columns.labels)
    rows = []
    for index, name in enumerate(columns.labels):
        files = sorted(found[name].glob("*.txt"))
        if not files:
            raise StageError(f"{found[name]}: empty label folder; expected .txt files, one "
                             f"text of label {name!r} each")
        rows += [(decode_utf8(f.read_bytes(), f), index) for f in files]
    return pd.DataFrame(rows, columns=["text", "label"]).assign(split=split)
