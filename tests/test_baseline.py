"""The TF-IDF + logistic regression baseline: same splits, same scores, same nesting."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.metrics import (accuracy_score, log_loss, matthews_corrcoef,
                             precision_recall_fscore_support)

from finetuning.baseline import baseline_results, fit_baseline, score_frame
from finetuning.config import Baseline, ConfigError, config_from_dict
from finetuning.data.prepared import read_prepared
from finetuning.errors import StageError
from finetuning.metrics import expected_calibration_error
from tests.conftest import make_sentences, paths_under, repo_params, run_stage_main, write_params

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["negative", "positive"]


def indexed(frame: pd.DataFrame) -> pd.DataFrame:
    """The prepare stage's layout: text and the label's index."""
    return frame.assign(label=frame["label"].map({name: i for i, name in enumerate(LABELS)}))


@pytest.fixture
def splits() -> dict[str, pd.DataFrame]:
    frames = indexed(make_sentences(120, seed=5))
    return {"train": frames[:80], "validation": frames[80:100].reset_index(drop=True),
            "test": frames[100:].reset_index(drop=True),
            "ood_other": indexed(make_sentences(30, seed=6))}


def test_scores_match_scikit_learn(splits):
    model = fit_baseline(splits["train"], Baseline(min_df=1))
    test = splits["test"]
    result = score_frame(model, test, len(LABELS))
    probs = model.predict_proba(test["text"])
    precision, recall, f1, _ = precision_recall_fscore_support(
        test["label"], probs.argmax(1), average="macro", zero_division=0)
    assert result == pytest.approx({
        "loss": log_loss(test["label"], probs), "accuracy": accuracy_score(test["label"],
                                                                          probs.argmax(1)),
        "precision": precision, "recall": recall, "f1": f1, "count": 20,
        "mcc": matthews_corrcoef(test["label"], probs.argmax(1)),
        "ece": expected_calibration_error(probs, test["label"].to_numpy())})


def test_learns_the_synthetic_words(splits):
    results = baseline_results(splits, Baseline(min_df=1), len(LABELS))
    assert set(results) == {"validation", "test", "ood_other"}
    assert results["test"]["accuracy"] >= 0.8  # one sentiment word decides each sentence
    assert results["test"]["loss"] < 0.69  # better than chance (log 2)


def test_class_missing_from_train_gets_zero_probability(splits):
    train = splits["train"][splits["train"]["label"] == 0].copy()
    train.loc[train.index[:3], "label"] = 2  # a 3-label task whose train split lacks "1"
    result = score_frame(fit_baseline(train, Baseline(min_df=1)), splits["test"], 3)
    assert math.isfinite(result["loss"]) and result["count"] == 20
    assert result["recall"] <= 1 / 3  # only "negative" can be recalled, out of 3 classes


def test_stage_writes_eval_nesting_and_is_seeded(tmp_path, splits):
    params = {**repo_params(), "paths": paths_under(tmp_path)}
    params["baseline"]["min_df"] = 1
    prepared = Path(params["paths"]["prepared"])
    prepared.mkdir(parents=True)
    for name, frame in splits.items():
        frame.to_parquet(prepared / f"{name}.parquet", index=False)
    params_file = write_params(params, tmp_path / "params.yaml")
    metrics = Path(params["paths"]["baseline_metrics"])
    run_stage_main("baseline", params_file)
    first = json.loads(metrics.read_text())
    assert set(first) == {"validation", "test", "ood"} and set(first["ood"]) == {"other"}
    assert first["test"]["count"] == 20 and first["ood"]["other"]["count"] == 30
    assert set(first["test"]) == {"loss", "accuracy", "precision", "recall", "f1", "mcc",
                                  "ece", "count"}
    run_stage_main("baseline", params_file)
    assert json.loads(metrics.read_text()) == first


def test_missing_train_split_is_a_user_error(tmp_path):
    with pytest.raises(StageError, match="no train split"):
        read_prepared(tmp_path)


def test_no_vocabulary_is_a_user_error(splits):
    with pytest.raises(StageError, match="baseline could not be fitted"):
        fit_baseline(splits["train"], Baseline(min_df=1000))


@pytest.mark.parametrize("params, message", [
    ({"baseline": {"c": 0}}, "baseline.c must be a float > 0"),
    ({"baseline": {"ngram_max": 9}}, "baseline.ngram_max must be an integer in [1, 5]"),
    ({"baseline": {"min_df": 0}}, "baseline.min_df must be an integer >= 1"),
    ({"baseline": {"ngrams": 2}}, "unknown key 'baseline.ngrams'"),
])
def test_bad_baseline_params_name_the_key(params, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**repo_params(), **params})
    assert message in str(err.value)


def test_repo_defaults_match_the_dataclass():
    cfg = config_from_dict(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert cfg.baseline == Baseline()
