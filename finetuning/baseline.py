"""The bar to clear: TF-IDF word n-grams + logistic regression, fitted on the train split
in seconds and scored on every other split exactly as the fine-tuned model is (log loss,
accuracy, macro precision / recall / F1, count). For sentence pairs each text gets its own
n-gram features, side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline, make_pipeline

from finetuning.config import Baseline
from finetuning.errors import StageError
from finetuning.metrics import confusion_matrix, expected_calibration_error, scores


def model_inputs(frame: pd.DataFrame) -> pd.Series | pd.DataFrame:
    """What the baseline reads of a split: the texts, or both columns of pairs."""
    return frame[["text", "text_pair"]] if "text_pair" in frame else frame["text"]


def fit_baseline(train: pd.DataFrame, cfg: Baseline) -> Pipeline:
    """Fit word (or character) n-gram TF-IDF features and a logistic regression on the
    train split."""
    def vectorizer() -> TfidfVectorizer:
        return TfidfVectorizer(analyzer=cfg.analyzer, ngram_range=(1, cfg.ngram_max),
                               min_df=cfg.min_df,
                               max_features=cfg.max_features or None, sublinear_tf=True)
    features = vectorizer() if "text_pair" not in train else ColumnTransformer(
        [(column, vectorizer(), column) for column in ("text", "text_pair")])
    classifier = LogisticRegression(C=cfg.c, max_iter=cfg.max_iter, random_state=cfg.seed)
    try:
        return make_pipeline(features, classifier).fit(model_inputs(train), train["label"])
    except ValueError as err:  # e.g. min_df leaves no vocabulary on a tiny train split
        raise StageError(f"baseline could not be fitted: {err}") from err


def score_frame(model: Pipeline, frame: pd.DataFrame, num_labels: int) -> dict[str, float]:
    """Log loss, accuracy, macro precision / recall / F1, MCC, ECE and count, as evaluate
    reports them.

    Classes absent from the train split get probability 0 (log loss is then clipped).
    """
    classes = list(range(num_labels))
    probs = np.zeros((len(frame), num_labels))
    probs[:, model.classes_] = model.predict_proba(model_inputs(frame))
    labels = frame["label"].to_numpy()
    confusion = confusion_matrix(torch.tensor(probs.argmax(-1)), torch.tensor(labels),
                                 num_labels).numpy()
    return {"loss": float(log_loss(labels, probs, labels=classes)), **scores(confusion),
            "ece": expected_calibration_error(probs, labels), "count": int(len(frame))}


def baseline_results(splits: dict[str, pd.DataFrame], cfg: Baseline,
                     num_labels: int) -> dict[str, dict]:
    """Fit on train; score every other split (flat split names, as evaluate's results)."""
    model = fit_baseline(splits["train"], cfg)
    return {name: score_frame(model, frame, num_labels)
            for name, frame in splits.items() if name != "train"}
