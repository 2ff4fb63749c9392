"""Everything the report reads, loaded once: the metrics files of every stage, the
event files (through tensorboard's reader) and the test predictions."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finetuning.config import Paths
from finetuning.errors import StageError
from finetuning.monitoring.events import read_scalars
from finetuning.outputs import read_json

TEST_PREDICTIONS = "test.csv"  # the evaluate stage's predictions of the test split


@dataclass
class RunData:
    """Everything the report reads, loaded once."""

    source: dict
    prepared: dict
    tokenized: dict
    train: dict
    scores: dict
    baseline: dict
    export: dict
    scalars: dict[str, list[tuple[int, float]]]
    predictions: pd.DataFrame


def load_run(paths: Paths) -> RunData:
    """Read the metrics files, the event files and the test predictions."""
    predictions = Path(paths.predictions) / TEST_PREDICTIONS
    files = [paths.source_record, paths.prepare_metrics, paths.tokenize_metrics,
             paths.train_metrics, paths.eval_metrics, paths.baseline_metrics,
             paths.export_metrics, predictions]
    missing = [str(f) for f in files if not Path(f).is_file()]
    missing += [] if Path(paths.tensorboard).is_dir() else [paths.tensorboard]
    if missing:
        raise StageError(f"the report needs {', '.join(missing)}: run the stages before it")
    return RunData(*(read_json(f) for f in files[:-1]), read_scalars(paths.tensorboard),
                   pd.read_csv(predictions, keep_default_na=False,
                               dtype={"text": str, "label": str, "predicted": str}))
