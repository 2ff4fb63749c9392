"""Everything the report reads, loaded once: the records of every stage, the event files
(through tensorboard's reader) and the test predictions."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finetuning.config import Paths
from finetuning.monitoring.events import read_scalars
from finetuning.reporting.records import Records, load_records, require

TEST_PREDICTIONS = "test.csv"  # the evaluate stage's predictions of the test split


@dataclass
class RunData(Records):
    """Everything the report reads: the records, the event files, the test predictions."""

    scalars: dict[str, list[tuple[int, float]]]
    pretrain_scalars: dict[str, list[tuple[int, float]]]  # empty when nothing pretrained
    predictions: pd.DataFrame


def load_run(paths: Paths) -> RunData:
    """Read the records, the event files and the test predictions."""
    predictions = Path(paths.predictions) / TEST_PREDICTIONS
    require([predictions, paths.tensorboard], "report")
    records = load_records(paths, "report")
    pretrained = Path(paths.pretrain_tensorboard)
    return RunData(**vars(records), scalars=read_scalars(paths.tensorboard),
                   pretrain_scalars=read_scalars(pretrained) if pretrained.is_dir() else {},
                   predictions=pd.read_csv(predictions, keep_default_na=False,
                                           dtype={"text": str, "label": str,
                                                  "predicted": str}))
