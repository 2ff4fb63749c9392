"""baseline: TF-IDF + logistic regression on the prepared splits, scored like evaluate.

Writes `metrics/baseline.json` (a DVC metric) with the nesting of `metrics/eval.json`:
{"validation": .., "test": .., "ood": {"<set>": ..}}, each with loss (log loss),
accuracy, macro precision / recall / F1 and count. It runs in seconds and tells whether
fine-tuning earns its cost.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, log_loss
from sklearn.pipeline import Pipeline, make_pipeline

from stages.cli import run_stage
from stages.config import Baseline, Config
from stages.errors import StageError
from stages.metrics import nest_results, scores
from stages.outputs import write_json

log = logging.getLogger(__name__)


def read_prepared(folder: str | Path) -> dict[str, pd.DataFrame]:
    """Every `<split>.parquet` the prepare stage wrote, by split name."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not any(f.stem == "train" for f in files):
        raise StageError(f"no train split in {folder}; run the prepare stage first")
    return {f.stem: pd.read_parquet(f, columns=["text", "label"]) for f in files}


def fit_baseline(train: pd.DataFrame, cfg: Baseline) -> Pipeline:
    """Fit word n-gram TF-IDF features and a logistic regression on the train split."""
    vectorizer = TfidfVectorizer(ngram_range=(1, cfg.ngram_max), min_df=cfg.min_df,
                                 max_features=cfg.max_features or None, sublinear_tf=True)
    classifier = LogisticRegression(C=cfg.c, max_iter=cfg.max_iter, random_state=cfg.seed)
    try:
        return make_pipeline(vectorizer, classifier).fit(train["text"], train["label"])
    except ValueError as err:  # e.g. min_df leaves no vocabulary on a tiny train split
        raise StageError(f"baseline could not be fitted: {err}") from err


def score_frame(model: Pipeline, frame: pd.DataFrame, num_labels: int) -> dict[str, float]:
    """Log loss, accuracy, macro precision / recall / F1 and count, as evaluate reports them.

    Classes absent from the train split get probability 0 (log loss is then clipped).
    """
    classes = list(range(num_labels))
    probs = np.zeros((len(frame), num_labels))
    probs[:, model.classes_] = model.predict_proba(frame["text"])
    labels = frame["label"].to_numpy()
    confusion = confusion_matrix(labels, probs.argmax(-1), labels=classes)
    return {"loss": float(log_loss(labels, probs, labels=classes)), **scores(confusion),
            "count": int(len(frame))}


def baseline_results(splits: dict[str, pd.DataFrame], cfg: Baseline,
                     num_labels: int) -> dict[str, dict]:
    """Fit on train; score every other split (flat split names, as evaluate's results)."""
    model = fit_baseline(splits["train"], cfg)
    return {name: score_frame(model, frame, num_labels)
            for name, frame in splits.items() if name != "train"}


def baseline(cfg: Config) -> None:
    """Stage body: read the prepared splits, fit, score, write metrics/baseline.json."""
    started = time.perf_counter()
    results = baseline_results(read_prepared(cfg.paths.prepared), cfg.baseline,
                               len(cfg.prepare.labels))
    write_json(cfg.paths.baseline_metrics, nest_results(results))
    for name, result in results.items():
        log.info("%s: %s", name, {k: round(v, 4) for k, v in result.items()})
    log.info("baseline fitted and scored in %.1f s", time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.baseline`)."""
    run_stage("baseline", __doc__.splitlines()[0], baseline, argv)


if __name__ == "__main__":
    main()
