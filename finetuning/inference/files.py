"""What `finetune predict` reads and writes: texts from a .txt file (one per line), a table
(CSV, TSV, JSON, JSONL, Parquet; one column of texts) or standard input, and predictions
as JSON Lines or as the input's table with `label` and `score` added."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TextIO

import pandas as pd

from finetuning.data.sources import TABLE_SUFFIXES
from finetuning.data.tables import decode_utf8, read_table, require_columns, text_cells
from finetuning.errors import StageError
from finetuning.outputs import atomic_file

log = logging.getLogger(__name__)

STDIN = "-"
OUTPUT_SUFFIXES = (".jsonl", ".csv", ".tsv")


def read_inputs(source: str, text_column: str = "text", pair_column: str | None = None
                ) -> pd.DataFrame:
    """The input as a table whose `text_column` holds the texts (a .txt file or standard
    input becomes a one-column table, one row per line), and `pair_column` the second
    texts of sentence pairs (tables only)."""
    if pair_column and (source == STDIN or Path(source).suffix.lower() == ".txt"):
        raise StageError(f"--text-pair-column {pair_column}: sentence pairs need a table "
                         f"input ({', '.join(TABLE_SUFFIXES)}) with both columns, not "
                         f"{'standard input' if source == STDIN else source}")
    if source == STDIN:
        lines = decode_utf8(sys.stdin.buffer.read(), "<stdin>").splitlines()
        return pd.DataFrame({text_column: lines}, dtype=object)
    path = Path(source)
    if not path.is_file():
        raise StageError(f"input {path} does not exist (give a file, or - for standard input)")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = decode_utf8(path.read_bytes(), path).removeprefix("\ufeff").splitlines()
        return pd.DataFrame({text_column: lines}, dtype=object)
    if suffix not in TABLE_SUFFIXES:
        raise StageError(f"{path}: unsupported input type {suffix!r}; expected .txt or one of "
                         f"{TABLE_SUFFIXES}")
    frame = read_table(path)
    columns = [text_column, *([pair_column] if pair_column else [])]
    require_columns(frame, path, columns,
                    "--text-column / --text-pair-column" if pair_column else "--text-column")
    return frame.assign(**{c: text_cells(frame, path, c) for c in columns})


def check_output(target: str | None) -> None:
    """Refuse an output file type before any work is done."""
    if target is not None and Path(target).suffix.lower() not in OUTPUT_SUFFIXES:
        raise StageError(f"-o {target}: unsupported output type; expected one of "
                         f"{OUTPUT_SUFFIXES}")


def write_jsonl(inputs: list[dict], predictions: list[dict], handle: TextIO) -> None:
    """One object per input row: text (and text_pair), label, score, every label's score."""
    for item, prediction in zip(inputs, predictions):
        handle.write(json.dumps({**item, **prediction}, ensure_ascii=False) + "\n")


def write_predictions(frame: pd.DataFrame, text_column: str, predictions: list[dict],
                      target: str | None, pair_column: str | None = None) -> None:
    """JSON Lines to standard output (no target) or a .jsonl file; a .csv/.tsv target gets
    the input's columns plus `label` and `score`. A file appears only when complete."""
    names = {"text": text_column, **({"text_pair": pair_column} if pair_column else {})}
    inputs = frame[list(names.values())].set_axis(list(names), axis=1).to_dict("records")
    if target is None:
        write_jsonl(inputs, predictions, sys.stdout)
        return
    suffix = Path(target).suffix.lower()
    with atomic_file(target) as handle:
        if suffix == ".jsonl":
            write_jsonl(inputs, predictions, handle)
        else:
            columns = prediction_columns(frame)
            out = frame.assign(**{columns[0]: [p["label"] for p in predictions],
                                  columns[1]: [p["score"] for p in predictions]})
            out.to_csv(handle, index=False, sep="\t" if suffix == ".tsv" else ",")


def prediction_columns(frame: pd.DataFrame) -> tuple[str, str]:
    """`label` and `score`, or `predicted_label` and `predicted_score` when the input has
    a column of either name already (a labelled file keeps its true labels)."""
    if {"label", "score"} & set(frame.columns):
        log.info("the input has a label or score column: predictions go to "
                 "predicted_label and predicted_score")
        return "predicted_label", "predicted_score"
    return "label", "score"
