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
# A split's own name, or a Hub shard of it (train-00000-of-00002[-<hash>]); not
# `test_reviews.csv` or `train_2021.csv`, which are ordinary names.
SPLIT_FILE = re.compile(r"^(train|validation|dev|test)(-\d{5}-of-\d{5}(-[0-9a-f]+)?)?$",
                        re.IGNORECASE)
HINT = ("; for a Hub dataset, fetch.hf_splits chooses which of its splits are fetched "
        "(train, validation, test)")


def file_split(path: Path) -> str | None:
    """The split a table file's name stands for (`train.csv`, `000-dev.jsonl`,
    `test-00000-of-00001.parquet`), or None."""
    match = SPLIT_FILE.match(FETCH_PREFIX.sub("", path.name).split(".")[0])
    return SPLIT_NAMES[match.group(1).lower()] if match else None


def visible(path: Path) -> bool:
    """Not a hidden file or folder, nor an archiver's leftovers (`.ipynb_checkpoints`,
    `__MACOSX`, macOS `._name.txt`)."""
    return not path.name.startswith((".", "__MACOSX"))


def folders_of(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and visible(p))


def by_split(folders: list[Path]) -> bool:
    """Whether these top-level folders are splits (`train/`, `test/`, ...), not labels."""
    return bool(folders) and all(f.name.lower() in SPLIT_NAMES for f in folders)


def label_folder_files(root: Path) -> list[Path]:
    """The text files of a label-folder layout under `root`, relative to it: the `.txt`
    files exactly one folder (the label) below the top, or below a split folder. Other
    files (aclImdb's README, vocabularies, `urls_*.txt`) are not data."""
    depth = 3 if by_split(folders_of(root)) else 2
    found = (p.relative_to(root) for p in root.rglob("*.txt") if p.is_file())
    return sorted(rel for rel in found if len(rel.parts) == depth
                  and all(visible(Path(part)) for part in rel.parts))


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
    if folders_of(folder):
        return read_label_folders(folder, columns)
    files = sorted(p for p in folder.iterdir() if p.is_file() and visible(p))
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
                         f"every file train.*, validation.* (or dev.*) or test.*, or none{HINT}")
    return pd.concat([f.assign(split=s or "") for f, s in zip(frames, splits)],
                     ignore_index=True)


def read_label_folders(folder: Path, columns: Columns) -> pd.DataFrame:
    """`<label>/*.txt` or `<split>/<label>/*.txt` as examples."""
    if columns.pair or columns.split:
        raise StageError(f"{folder} is a label-folder layout (one text per file): "
                         "prepare.text_pair_column and prepare.split_column need tables")
    top = folders_of(folder)
    groups = [(SPLIT_NAMES[p.name.lower()], p) for p in top] if by_split(top) else [("", folder)]
    return pd.concat([read_label_folder(root, split, columns) for split, root in groups],
                     ignore_index=True)


def read_label_folder(root: Path, split: str, columns: Columns) -> pd.DataFrame:
    """One folder per label under `root`, each holding `.txt` files."""
    found = {p.name: p for p in folders_of(root)}
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
        files = sorted(f for f in found[name].glob("*.txt") if visible(f))
        if not files:
            raise StageError(f"{found[name]}: empty label folder; expected .txt files, one "
                             f"text of label {name!r} each")
        rows += [(decode_utf8(f.read_bytes(), f).removeprefix("\ufeff"), index)
                 for f in files]
    return pd.DataFrame(rows, columns=["text", "label"]).assign(split=split)
