"""Labelled tables to train/validation/test splits: clean, subsample, split by class.

Empty texts are dropped and duplicates removed before the stratified split, so no text
can land in two splits. Out-of-domain sets are kept whole as extra evaluation splits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetuning.config import OOD_PREFIX, Prepare
from finetuning.data.tables import read_examples
from finetuning.errors import StageError


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop empty/whitespace texts and exact duplicates (after trimming); count what went."""
    text = frame["text"].str.strip()
    empty = text == ""
    kept = frame.assign(text=text)[~empty]
    deduped = kept.drop_duplicates("text", keep="first")
    dropped = {"empty": int(empty.sum()), "duplicate": int(len(kept) - len(deduped))}
    return deduped.reset_index(drop=True), dropped


def stratified_split(frame: pd.DataFrame, cfg: Prepare) -> dict[str, pd.DataFrame]:
    """Split per class with the seed; every class gets at least one row in each split."""
    rng = np.random.default_rng(cfg.seed)
    parts: dict[str, list[pd.DataFrame]] = {"train": [], "validation": [], "test": []}
    for label, group in frame.groupby("label", sort=True):
        n = len(group)
        if n < 3:
            raise StageError(f"class {cfg.labels[label]!r} has only {n} row(s) after cleaning; "
                             "at least 3 are needed to put one in each of train/validation/test")
        order = rng.permutation(n)
        n_test = max(1, round(n * cfg.test_size))
        n_val = max(1, round(n * cfg.validation_size))
        if n - n_test - n_val < 1:
            n_val = n_test = 1
        shuffled = group.iloc[order]
        parts["test"].append(shuffled.iloc[:n_test])
        parts["validation"].append(shuffled.iloc[n_test:n_test + n_val])
        parts["train"].append(shuffled.iloc[n_test + n_val:])
    missing = set(range(len(cfg.labels))) - set(frame["label"].unique())
    if missing:
        raise StageError(f"no rows with label {[cfg.labels[i] for i in sorted(missing)]} "
                         f"(prepare.labels is {cfg.labels})")
    # A seeded shuffle within each split, so files are not sorted by label.
    return {name: pd.concat(p).sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)
            for name, p in parts.items()}


def subsample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Keep at most `max_rows` rows, stratified by label (for quick runs and tests)."""
    if not max_rows or len(frame) <= max_rows:
        return frame
    share = max_rows / len(frame)
    parts = [group.sample(min(len(group), max(3, round(len(group) * share))), random_state=seed)
             for _, group in frame.groupby("label", sort=True)]
    return pd.concat(parts).reset_index(drop=True)


def prepare_splits(raw: Path, cfg: Prepare) -> tuple[dict[str, pd.DataFrame], dict]:
    """Read `raw` (fetch's layout) into named splits and a summary of counts."""
    args = (cfg.text_column, cfg.label_column, cfg.labels)
    main, dropped = clean(read_examples(raw / "main", *args))
    splits = stratified_split(subsample(main, cfg.max_rows, cfg.seed), cfg)
    summary = {"dropped": {"main": dropped}}
    ood_root = raw / "ood"
    for folder in sorted(ood_root.iterdir()) if ood_root.is_dir() else []:
        ood, summary["dropped"][folder.name] = clean(read_examples(folder, *args))
        splits[OOD_PREFIX + folder.name] = subsample(ood, cfg.max_rows, cfg.seed)
    summary["rows"] = {name: len(frame) for name, frame in splits.items()}
    summary["labels"] = {name: {label: int((frame["label"] == i).sum())
                                for i, label in enumerate(cfg.labels)}
                         for name, frame in splits.items()}
    return splits, summary
