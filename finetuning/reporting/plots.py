"""Plot data for `dvc plots`: curves exported from the event files, and the test split's
confusion pairs and precision-recall / ROC points, as small git-tracked TSV/CSV/JSON files.

The report draws its figures from these same series, so what `dvc plots show` shows and
what the report shows cannot drift apart.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (average_precision_score, precision_recall_curve, roc_auc_score,
                             roc_curve)

from finetuning.errors import StageError

Series = list[tuple[int, float]]
CONFUSION_FILE = "confusion.csv"
PR_FILE = "pr.json"
ROC_FILE = "roc.json"


def curve_file(tag: str) -> str:
    """File name of one scalar series: `train/loss` -> `train_loss.tsv`."""
    return tag.replace("/", "_") + ".tsv"


def write_series(series: Series, target: Path) -> None:
    """`step<TAB>value` rows; values in full precision (repr), so they read back exactly."""
    lines = ["step\tvalue"] + [f"{step}\t{value!r}" for step, value in series]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_series(path: Path) -> Series:
    """Read a file written by `write_series`."""
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(int(step), float(value)) for step, value in (row.split("\t") for row in rows)]


def positive_scores(predictions: pd.DataFrame, labels: list[str]) -> tuple[np.ndarray, np.ndarray,
                                                                            str]:
    """(is-positive, score) pairs for one precision-recall / ROC curve, and its name.

    Binary: the second label is the positive class. More classes: every (row, class) pair
    one-vs-rest, pooled (the micro average).
    """
    missing = [f"prob_{name}" for name in labels if f"prob_{name}" not in predictions]
    if missing:
        raise StageError(f"predictions lack the columns {missing}; rerun the evaluate stage")
    if len(labels) == 2:
        return ((predictions["label"] == labels[1]).to_numpy(),
                predictions[f"prob_{labels[1]}"].to_numpy(), f"class '{labels[1]}'")
    truth = np.stack([(predictions["label"] == name).to_numpy() for name in labels], axis=1)
    probs = predictions[[f"prob_{name}" for name in labels]].to_numpy()
    return truth.ravel(), probs.ravel(), "micro average over classes"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None  # JSON has no infinity


def pr_points(truth: np.ndarray, score: np.ndarray) -> list[dict]:
    """Precision-recall curve points (the last one, recall 0, has no threshold)."""
    precision, recall, thresholds = precision_recall_curve(truth, score)
    thresholds = np.append(thresholds, np.nan)
    return [{"recall": float(r), "precision": float(p), "threshold": _finite(t)}
            for p, r, t in zip(precision, recall, thresholds)]


def roc_points(truth: np.ndarray, score: np.ndarray) -> list[dict]:
    """ROC curve points (the first one, (0, 0), has an infinite threshold: null)."""
    fpr, tpr, thresholds = roc_curve(truth, score)
    return [{"fpr": float(f), "tpr": float(t), "threshold": _finite(h)}
            for f, t, h in zip(fpr, tpr, thresholds)]


def export_plots(scalars: dict[str, Series], predictions: pd.DataFrame, curves: Curves,
                 out: Path) -> None:
    """Write every scalar series, the test confusion pairs and PR / ROC points into `out`."""
    for tag, series in scalars.items():
        write_series(series, out / curve_file(tag))
    predictions[["label", "predicted"]].rename(columns={"label": "actual"}).to_csv(
        out / CONFUSION_FILE, index=False)
    for name, points in ((PR_FILE, curves.pr), (ROC_FILE, curves.roc)):
        (out / name).write_text(json.dumps(points, indent=1) + "\n", encoding="utf-8")


def curve_areas(truth: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Average precision and ROC AUC of the (is-positive, score) pairs."""
    return float(average_precision_score(truth, score)), float(roc_auc_score(truth, score))


@dataclass(frozen=True)
class Curves:
    """The test split's precision-recall and ROC curves, their areas, and what they are of."""

    name: str
    pr: list[dict]
    roc: list[dict]
    average_precision: float
    roc_auc: float
    per_class: dict[str, tuple[list[dict], float]] = field(default_factory=dict)  # PR, AP


def curves_of(predictions: pd.DataFrame, labels: list[str]) -> Curves:
    """PR and ROC points and areas of the evaluate stage's test predictions; with more
    than two classes, also each class's one-vs-rest PR curve and average precision."""
    truth, score, name = positive_scores(predictions, labels)
    per_class = {}
    for label in labels if len(labels) > 2 else []:
        is_label = (predictions["label"] == label).to_numpy()
        probs = predictions[f"prob_{label}"].to_numpy()
        per_class[label] = (pr_points(is_label, probs),
                            float(average_precision_score(is_label, probs)))
    return Curves(name, pr_points(truth, score), roc_points(truth, score),
                  *curve_areas(truth, score), per_class)
