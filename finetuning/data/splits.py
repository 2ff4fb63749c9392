"""Labelled examples to train/validation/test splits: clean, subsample, split by class.

A source whose layout names its splits (finetuning/data/layouts.py) keeps them; one that
does not is split here, stratified by class with the seed. Empty texts are dropped and
duplicates removed first, and a text found in two splits is kept only in the later of
train < validation < test, so no text is in two splits. Out-of-domain sets are kept whole
as extra evaluation splits.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from finetuning.config import OOD_PREFIX, Prepare
from finetuning.data.layouts import read_examples
from finetuning.data.tables import Columns
from finetuning.errors import StageError


def row_key(frame: pd.DataFrame) -> pd.Series:
    """What makes two rows the same example: the text, or the pair of texts."""
    if "text_pair" not in frame:
        return frame["text"]
    return frame["text"] + "\x1f" + frame["text_pair"]


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop empty/whitespace texts, every row of a text that carries different labels
    (no label of it can be trusted), and exact duplicates (after trimming); count what
    went, in rows."""
    texts = [c for c in ("text", "text_pair") if c in frame]
    stripped = frame.assign(**{c: frame[c].str.strip() for c in texts})
    empty = (stripped[texts] == "").any(axis=1)
    kept = stripped[~empty]
    conflicting = kept.groupby(row_key(kept))["label"].transform("nunique") > 1
    consistent = kept[~conflicting]
    deduped = consistent[~row_key(consistent).duplicated(keep="first")]
    dropped = {"empty": int(empty.sum()), "conflicting_labels": int(conflicting.sum()),
               "duplicate": int(len(consistent) - len(deduped))}
    return deduped.reset_index(drop=True), dropped


def stratified_split(frame: pd.DataFrame, cfg: Prepare, origin: str = "the data",
                     sizes: dict[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """Split per class with the seed into train and the splits of `sizes` (fractions of
    `frame`; by default test and validation); every class gets at least one row in each.
    Errors name `origin`, the user's source."""
    sizes = sizes or {"test": cfg.test_size, "validation": cfg.validation_size}
    rng = np.random.default_rng(cfg.seed)
    parts: dict[str, list[pd.DataFrame]] = {"train": [], **{name: [] for name in sizes}}
    for label, group in frame.groupby("label", sort=True):
        n = len(group)
        if n < len(parts):
            raise StageError(f"class {cfg.labels[label]!r} has only {n} row(s) in {origin} "
                             f"after cleaning; at least {len(parts)} are needed to put one in "
                             f"each of {'/'.join(parts)}")
        counts = [max(1, round(n * size)) for size in sizes.values()]
        if n - sum(counts) < 1:
            counts = [1] * len(counts)
        shuffled, start = group.iloc[rng.permutation(n)], 0
        for name, count in zip(sizes, counts):
            parts[name].append(shuffled.iloc[start:start + count])
            start += count
        parts["train"].append(shuffled.iloc[start:])
    check_classes({"the data": frame}, cfg.labels, origin)
    # A seeded shuffle within each split, so files are not sorted by label.
    return {name: pd.concat(p).sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)
            for name, p in parts.items()}


def check_classes(splits: dict[str, pd.DataFrame], labels: list[str], origin: str) -> None:
    """Refuse a split that has no row of some class, naming the split and the source."""
    for name, frame in splits.items():
        missing = set(range(len(labels))) - set(frame["label"].unique())
        if missing:
            where = f"{origin}" if name == "the data" else f"the {name} split of {origin}"
            raise StageError(f"{where} has no rows with label "
                             f"{[labels[i] for i in sorted(missing)]} (prepare.labels is "
                             f"{labels})")


def own_splits(examples: pd.DataFrame, cfg: Prepare, origin: str
               ) -> tuple[dict[str, pd.DataFrame], dict[str, int], dict[str, str]]:
    """The source's own splits, cleaned; a text in two splits stays only in the later
    one of train < validation < test; a missing validation or test split is carved from
    train by the seed. Returns the splits, the drop counts and where each split came from."""
    splits, dropped = {}, {"empty": 0, "conflicting_labels": 0, "duplicate": 0,
                           "in_another_split": 0}
    for name in ("test", "validation", "train"):
        part = examples[examples["split"] == name].drop(columns="split")
        if part.empty:
            continue
        part, counts = clean(part)
        dropped.update({k: dropped[k] + v for k, v in counts.items()})
        elsewhere = row_key(part).isin(set().union(*(row_key(s) for s in splits.values())))
        dropped["in_another_split"] += int(elsewhere.sum())
        if elsewhere.all():
            raise StageError(f"the {name} split of {origin} has no rows left: all "
                             f"{len(part)} of its texts are also in a later split")
        # A seeded shuffle, so no split is sorted by label (label folders are read so).
        splits[name] = part[~elsewhere].sample(frac=1.0, random_state=cfg.seed
                                               ).reset_index(drop=True)
    if "train" not in splits:
        raise StageError(f"{origin} has splits {sorted(splits)} but no train split; name a "
                         "file train.* (or the rows' split train)")
    made = {name: "the source's own" for name in splits}
    carve = {name: getattr(cfg, f"{name}_size") for name in ("test", "validation")
             if name not in splits}
    if carve:
        splits.update(stratified_split(splits["train"], cfg, f"the train split of {origin}",
                                       carve))
        made.update({name: f"carved from train ({size:g})" for name, size in carve.items()})
    check_classes(splits, cfg.labels, origin)
    return {name: splits[name] for name in ("train", "validation", "test")}, dropped, made


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


def main_splits(raw: Path, cfg: Prepare, origins: dict[str, str]
                ) -> tuple[dict[str, pd.DataFrame], dict[str, int], dict[str, str]]:
    """The train/validation/test splits of the main source: its own splits when its
    layout names them, else a stratified split of every row."""
    origin = origins.get("main", str(raw / "main"))
    examples = read_examples(raw / "main", Columns.of(cfg), origins.get("main"))
    if (examples["split"] != "").any():
        splits, dropped, made = own_splits(examples, cfg, origin)
        total = sum(len(frame) for frame in splits.values())
        if cfg.max_rows and total > cfg.max_rows:  # the same share of every split
            share = cfg.max_rows / total
            splits = {name: subsample(frame, max(1, round(len(frame) * share)), cfg.seed)
                      for name, frame in splits.items()}
        return splits, dropped, made
    main, dropped = clean(examples.drop(columns="split"))
    splits = stratified_split(subsample(main, cfg.max_rows, cfg.seed), cfg, origin)
    made = dict.fromkeys(splits, "stratified by class from all rows")
    return splits, {**dropped, "in_another_split": 0}, made


def prepare_splits(raw: Path, cfg: Prepare) -> tuple[dict[str, pd.DataFrame], dict]:
    """Read `raw` (fetch's layout) into named splits and a summary of counts."""
    origins = source_names(raw)
    splits, dropped, made = main_splits(raw, cfg, origins)
    summary = {"dropped": {"main": dropped}, "split_from": made}
    ood_root = raw / "ood"
    for folder in sorted(ood_root.iterdir()) if ood_root.is_dir() else []:
        columns = dataclasses.replace(Columns.of(cfg), split="")  # kept whole: no splits
        examples = read_examples(folder, columns, origins.get(folder.name))
        ood, summary["dropped"][folder.name] = clean(examples.drop(columns="split"))
        splits[OOD_PREFIX + folder.name] = subsample(ood, cfg.max_rows, cfg.seed)
    summary["rows"] = {name: len(frame) for name, frame in splits.items()}
    summary["labels"] = {name: {label: int((frame["label"] == i).sum())
                                for i, label in enumerate(cfg.labels)}
                         for name, frame in splits.items()}
    return splits, summary
