"""The prepare stage's output on disk: one `<split>.parquet` of (text, label), or (text,
text_pair, label) for sentence pairs, per split, written once and read by tokenize,
train, evaluate and baseline."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from finetuning.errors import StageError


def write_splits(splits: dict[str, pd.DataFrame], folder: Path) -> None:
    """One `<split>.parquet` per split into `folder` (an atomic_dir of the stage)."""
    for name, frame in splits.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)


PAIR_MARK = " ‖ "  # between the two texts of a pair, where one string shows both


def read_prepared(folder: str | Path) -> dict[str, pd.DataFrame]:
    """Every `<split>.parquet` the prepare stage wrote, by split name."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not any(f.stem == "train" for f in files):
        raise StageError(f"no train split in {folder}; run the prepare stage first")
    return {f.stem: pd.read_parquet(f) for f in files}


def read_inputs(folder: str | Path, split: str) -> pd.DataFrame:
    """The text (and text_pair) columns of one prepared split, in row order (the
    tokenized split's order)."""
    frame = pd.read_parquet(Path(folder) / f"{split}.parquet")
    return frame[[c for c in ("text", "text_pair") if c in frame]]


def shown_texts(frame: pd.DataFrame) -> list[str]:
    """One string per row for tables and the projector: the text, or a pair as
    `text ‖ text_pair`."""
    if "text_pair" not in frame:
        return frame["text"].tolist()
    return (frame["text"] + PAIR_MARK + frame["text_pair"]).tolist()


def read_texts(folder: str | Path, split: str) -> list[str]:
    """The shown texts of one prepared split, in row order."""
    return shown_texts(read_inputs(folder, split))
