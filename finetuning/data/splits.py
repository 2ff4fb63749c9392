"""Labelled tables to train/validation/test splits: clean, subsample, split by class.

Empty texts are dropped and duplicates removed before the stratified split, so no text
can land in two splits. Out-of-domain sets are kept whole as extra evaluation splits.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from finetuning.config import OOD_PREFIX, Prepare
from finetuning.data.tables import read_examples
from finetuning.errors import StageError


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop empty/whitespace texts, every row of a text that carries different labels
    (no label of it can be trusted), and exact duplicates (after trimming); count what
    went, in rows."""
    text = frame["text"].str.strip()
    empty = text == ""
    kept = frame.assign(text=text)[~empty]
    conflicting = kept.groupby("text")["label"].transform("nunique") > 1
    consistent = kept[~conflicting]
    deduped = consistent.drop_duplicates("text", keep="first")
    dropped = {"empty": int(empty.sum()), "conflicting_labels": int(conflicting.sum()),
               "duplicate": int(len(consistent) - len(deduped))}
    return deduped.reset_index(drop=True), dropped


def stratified_split(frame: pd.DataFrame, cfg: Prepare, origin: str = "the data"
                     ) -> dict[str, pd.DataFrame]:
    """Split per class with the seed; every class gets at least one row in each split.
    Errors name `origin`, the user's source."""
    rng = np.random.default_rng(cfg.seed)
    parts: dict[str, list[pd.DataFrame]] = {"train": [], "validation": [], "test": []}
    for label, group in frame.groupby("label", sort=True):
        n = len(group)
        if n < 3:
            raise StageError(f"class {cfg.labels[label]!r} has only {n} row(s) in {origin} "
                             "after cleaning; at least 3 are needed to put one in each of "
                             "train/validation/test")
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
        raise StageError(f"{origin} has no rows with label "
                         f"{[cfg.labels[i] for i in sorted(missing)]} (prepare.labels is "
                         f"{cfg.labels})")
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


def source_names(raw: Path) -> dict[str, str]:
    """What the user named as each source (fetch's record `source.json`), by fetched folder
    ("main" or an out-of-domain set's name), as `fetch.data = ...`."""
    record = raw / "source.json"
    if not record.is_file():
        return {}
    sources = json.loads(record.read_text(encoding="utf-8"))
    names = {"main": f"fetch.data = {sources['data']['source']}"}
    names.update({name: f"fetch.ood.{name} = {entry['source']}"
                  for name, entry in sources.get("ood", {}).items()})
    return names


def prepare_splits(raw: Path, cfg: Prepare) -> tuple[dict[str, pd.DataFrame], dict]:
    """Read `raw` (fetch's layout) into named splits and a summary of counts."""
    args = (cfg.text_column, cfg.label_column, cfg.labels)
    origins = source_names(raw)
    main, dropped = clean(read_examples(raw / "main", *args, origins.get("main")))
    splits = stratified_split(subsample(main, cfg.max_rows, cfg.seed), cfg,
                              origins.get("main", str(raw / "main")))
    summary = {"dropped": {"main": dropped}}
    ood_root = raw / "ood"
    for folder in sorted(ood_root.iterdir()) if ood_root.is_dir() else []:
        ood, summary["dropped"][folder.name] = clean(read_examples(
            folder, *args, origins.get(folder.name)))
        splits[OOD_PREFIX + folder.name] = subsample(ood, cfg.max_rows, cfg.seed)
    summary["rows"] = {name: len(frame) for name, frame in splits.items()}
    summary["labels"] = {name: {label: int((frame["label"] == i).sum())
                                for i, label in enumerate(cfg.labels)}
                         for name, frame in splits.items()}
    return splits, summary
