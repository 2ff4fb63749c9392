"""The texts pretraining reads: the train split's (never validation's or test's: that
would leak them into the base), and those of an unlabeled corpus that fetch copied into
`<raw_data>/corpus` (`pretrain.corpus`: tables with a `prepare.text_column`)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from finetuning.data.layouts import visible
from finetuning.data.sources import TABLE_SUFFIXES
from finetuning.data.tables import read_table, require_columns, text_cells
from finetuning.errors import StageError

log = logging.getLogger(__name__)

CORPUS = "corpus"  # fetch's folder for pretrain.corpus, inside paths.raw_data


def train_texts(prepared: str | Path) -> list[str]:
    """Every text of the prepared train split (both texts of a pair)."""
    path = Path(prepared) / "train.parquet"
    if not path.is_file():
        raise StageError(f"no train split {path}; run the prepare stage first")
    frame = pd.read_parquet(path)
    return [t for column in ("text", "text_pair") if column in frame for t in frame[column]]


def corpus_texts(raw: str | Path, column: str) -> list[str]:
    """The non-empty texts of the fetched corpus (none when there is no corpus)."""
    folder = Path(raw) / CORPUS
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.rglob("*") if p.is_file() and visible(p)
                   and p.suffix.lower() in TABLE_SUFFIXES)
    texts = []
    for path in files:
        frame = read_table(path)
        require_columns(frame, path, [column], "prepare.text_column, for pretrain.corpus")
        texts += [t for t in text_cells(frame, path, column).str.strip() if t]
    log.info("corpus: %d texts from %d files in %s", len(texts), len(files), folder)
    return texts
