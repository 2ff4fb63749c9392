"""The prepare stage's output on disk: one `<split>.parquet` of (text, label) per split,
written once and read by tokenize, train, evaluate and baseline."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from finetuning.errors import StageError


def write_splits(splits: dict[str, pd.DataFrame], folder: Path) -> None:
    """One `<split>.parquet` per split into `folder` (an atomic_dir of the stage)."""
    for name, frame in splits.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)


def read_prepared(folder: str | Path, columns: tuple[str, ...] = ("text", "label")
                  ) -> dict[str, pd.DataFrame]:
    """Every `<split>.parquet` the prepare stage wrote, by split name."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not any(f.stem == "train" for f in files):
        raise StageError(f"no train split in {folder}; run the prepare stage first")
    return {f.stem: pd.read_parquet(f, columns=list(columns)) for f in files}


def read_texts(folder: str | Path, split: str) -> list[str]:
    """The texts of one prepared split, in row order (the tokenized split's order)."""
    return pd.read_parquet(Path(folder) / f"{split}.parquet", columns=["text"])["text"].tolist()
