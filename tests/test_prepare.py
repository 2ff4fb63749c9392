"""Cleaning and splitting: no text in two splits, stratified, seeded."""
import pandas as pd
import pytest

from finetuning.config import Prepare
from finetuning.errors import StageError
from finetuning.data.splits import clean, stratified_split, subsample


def frame(n_pos, n_neg):
    return pd.DataFrame({"text": [f"p{i}" for i in range(n_pos)] + [f"n{i}" for i in range(n_neg)],
                         "label": [1] * n_pos + [0] * n_neg})


def test_clean_drops_empty_and_duplicates_after_trimming():
    raw = pd.DataFrame({"text": ["a", " a ", "", "   ", "b"], "label": [1, 1, 0, 0, 0]})
    out, dropped = clean(raw)
    assert out["text"].tolist() == ["a", "b"]
    assert dropped == {"empty": 2, "conflicting_labels": 0, "duplicate": 1}


def test_a_text_with_two_labels_loses_every_row_and_is_counted():
    raw = pd.DataFrame({"text": ["a", "a ", "b", "b", "c", "b"], "label": [1, 0, 0, 0, 1, 0]})
    out, dropped = clean(raw)
    assert out.values.tolist() == [["b", 0], ["c", 1]]
    assert dropped == {"empty": 0, "conflicting_labels": 2, "duplicate": 2}


def test_split_is_stratified_disjoint_and_seeded():
    cfg = Prepare(validation_size=0.1, test_size=0.2, seed=7)
    splits = stratified_split(frame(100, 50), cfg)
    assert {k: len(v) for k, v in splits.items()} == {"train": 105, "validation": 15, "test": 30}
    assert (splits["test"]["label"] == 1).sum() == 20
    texts = [set(s["text"]) for s in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    again = stratified_split(frame(100, 50), cfg)
    assert splits["test"]["text"].tolist() == again["test"]["text"].tolist()
    other = stratified_split(frame(100, 50), Prepare(validation_size=0.1, test_size=0.2, seed=8))
    assert splits["test"]["text"].tolist() != other["test"]["text"].tolist()


def test_class_too_small_to_split_is_refused():
    with pytest.raises(StageError, match="class 'negative' has only 2 row"):
        stratified_split(frame(10, 2), Prepare())


def test_missing_class_is_refused():
    with pytest.raises(StageError, match=r"fetch.data = x.csv has no rows with label "
                       r"\['negative'\]"):
        stratified_split(frame(10, 0), Prepare(), "fetch.data = x.csv")


def test_subsample_keeps_balance():
    out = subsample(frame(300, 100), 40, seed=0)
    assert len(out) == 40 and (out["label"] == 1).sum() == 30


def test_prepare_names_the_source_the_user_gave(tmp_path):
    import json

    from finetuning.data.splits import prepare_splits

    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "000-reviews.csv").write_text("text,label\nx,positive\ny,0.5\n")
    (tmp_path / "source.json").write_text(json.dumps({"data": {"source": "~/my.csv"}}))
    with pytest.raises(StageError, match=r"000-reviews.csv: row 2, column 'label' has label "
                       r"'0.5'.*\(fetched from fetch.data = ~/my.csv\)"):
        prepare_splits(tmp_path, Prepare())
