"""A run's records: what each stage wrote as JSON (fetch's provenance, the counts of
prepare and tokenize, the figures of train and what ran, the scores of evaluate overall
and per class, the baseline's, the export's measurements), loaded once for the report
and the model card."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetuning.config import Paths
from finetuning.errors import StageError
from finetuning.outputs import read_json
from finetuning.provenance import git_state


@dataclass
class Records:
    """The JSON records of a finished run."""

    source: dict
    prepared: dict
    pretrain: dict       # metrics/pretrain.json: steps 0 when the fetched base passed through
    tokenized: dict
    train: dict          # metrics/train.json and metrics/train_run.json, merged
    scores: dict
    classes: dict        # per split, per class: precision, recall, F1, support
    baseline: dict
    export: dict


def record_files(paths: Paths) -> list[Path]:
    """The files `Records` holds."""
    return [Path(p) for p in (paths.source_record, paths.prepare_metrics,
                              paths.pretrain_metrics, paths.tokenize_metrics,
                              paths.train_metrics, paths.train_run, paths.eval_metrics,
                              paths.eval_classes, paths.baseline_metrics, paths.export_metrics)]


def run_commit(paths: Paths) -> str:
    """The commit a report or card describes, marked dirty unless only the pipeline's own
    git-kept outputs (dvc.lock, the plot data, these records) differ from it."""
    return git_state(["dvc.lock", paths.plots, *map(str, record_files(paths))])


def require(files: list[Path | str], what: str) -> None:
    """Refuse to go on without every file (or folder) in `files`."""
    missing = [str(f) for f in files if not Path(f).exists()]
    if missing:
        raise StageError(f"the {what} needs {', '.join(missing)}: run the stages before it")


def load_records(paths: Paths, what: str) -> Records:
    """Every record, or a StageError naming the missing ones."""
    files = record_files(paths)
    require(files, what)
    source, prepared, pretrain, tokenized, train, ran, scores, classes, baseline, export = (
        read_json(f) for f in files)
    return Records(source, prepared, pretrain, tokenized, {**ran, **train}, scores, classes,
                   baseline, export)


def flatten_eval(metrics: dict) -> dict[str, dict]:
    """eval.json's nesting as flat rows: validation, test, ood/<set>."""
    rows = {name: scores for name, scores in metrics.items() if name != "ood"}
    rows.update({f"ood/{name}": scores for name, scores in metrics.get("ood", {}).items()})
    return rows
