"""Every shape of classification data, read and split without training: a source's own
splits (split-named files, a split column, Hub splits with ClassLabel names), label
folders and sentence pairs; each bad shape is refused naming the file and what was
expected. (How long texts are cut: test_truncation.py.)"""
from __future__ import annotations

import datasets
import pandas as pd
import pytest

from finetuning.config import Prepare
from finetuning.data.fetching import copy_tables
from finetuning.data.layouts import file_split, read_examples
from finetuning.data.splits import prepare_splits
from finetuning.data.tables import Columns
from finetuning.errors import StageError
from tests.conftest import make_sentences

LABELS = ["negative", "positive"]


def raw_main(tmp_path):
    """An empty fetched layout (`raw/main`), as fetch leaves it for prepare."""
    main = tmp_path / "raw" / "main"
    main.mkdir(parents=True)
    return main


@pytest.mark.parametrize("name, split", [
    ("train.csv", "train"), ("000-dev.jsonl", "validation"), ("validation.parquet",
                                                               "validation"),
    ("test-00000-of-00001.parquet", "test"), ("TEST.tsv", "test"), ("reviews.csv", None),
    ("trainer.csv", None), ("000-contest.csv", None), ("test_reviews.csv", None),
    ("train_2021.csv", None), ("validation_matched.parquet", None),
    ("train-00000-of-00002-5c3b1a2b.parquet", "train")])
def test_a_file_name_says_its_split(tmp_path, name, split):
    assert file_split(tmp_path / name) == split


def test_a_source_keeps_its_own_test_split_and_train_loses_texts_shared_with_it(tmp_path):
    main = raw_main(tmp_path)
    train, test = make_sentences(80, seed=3), make_sentences(20, seed=4)
    shared = test.iloc[:3]  # the same three reviews in train too, one with the other label
    flipped = shared.assign(label=shared["label"].map({"positive": "negative",
                                                       "negative": "positive"}))
    pd.concat([train, shared.iloc[:2], flipped.iloc[2:]]).to_csv(main / "000-train.csv",
                                                                 index=False)
    test.to_csv(main / "001-test.csv", index=False)
    splits, summary = prepare_splits(tmp_path / "raw", Prepare(validation_size=0.2))
    assert sorted(splits["test"]["text"]) == sorted(test["text"])  # untouched, all of it
    assert not set(splits["train"]["text"]) & set(test["text"])
    assert summary["dropped"]["main"]["in_another_split"] == 3
    assert summary["split_from"] == {"train": "the source's own", "test": "the source's own",
                                     "validation": "carved from train (0.2)"}
    assert len(splits["validation"]) == 16 and len(splits["train"]) == 64  # 20% of 80
    assert not set(splits["validation"]["text"]) & set(splits["train"]["text"])
    assert splits["test"]["label"].tolist() == [LABELS.index(x) for x in
                                                test.set_index("text").loc[
                                                    splits["test"]["text"], "label"]]


def test_a_split_column_assigns_rows_and_a_bad_value_names_the_row(tmp_path):
    main = raw_main(tmp_path)
    frame = make_sentences(40, seed=5)
    frame["part"] = ["train"] * 24 + ["dev"] * 8 + ["test"] * 8
    frame.to_json(main / "000-all.jsonl", orient="records", lines=True)
    cfg = Prepare(split_column="part")
    splits, summary = prepare_splits(tmp_path / "raw", cfg)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [24, 8, 8]
    assert set(splits["validation"]["text"]) == set(frame["text"][24:32])
    frame.loc[30, "part"] = "holdout"
    frame.to_json(main / "000-all.jsonl", orient="records", lines=True)
    with pytest.raises(StageError, match=r"000-all.jsonl: row 31, column 'part' "
                       r"\(prepare.split_column\) holds 'holdout'; expected one of"):
        prepare_splits(tmp_path / "raw", cfg)


def test_split_named_and_unnamed_files_together_are_refused(tmp_path):
    main = raw_main(tmp_path)
    make_sentences(10).to_csv(main / "000-train.csv", index=False)
    make_sentences(10).to_csv(main / "001-extra.csv", index=False)
    with pytest.raises(StageError, match=r"\['000-train.csv'\] are named by split but "
                       r"\['001-extra.csv'\] are not"):
        read_examples(main, Columns("text", "label", LABELS))


def test_a_source_with_a_test_split_but_no_train_split_is_refused(tmp_path):
    main = raw_main(tmp_path)
    make_sentences(10).to_csv(main / "000-test.csv", index=False)
    with pytest.raises(StageError, match=r"has splits \['test'\] but no train split"):
        prepare_splits(tmp_path / "raw", Prepare())


def test_a_split_file_with_no_rows_names_the_file(tmp_path):
    main = raw_main(tmp_path)
    make_sentences(10).to_csv(main / "000-train.csv", index=False)
    (main / "001-test.csv").write_text("text,label\n")
    with pytest.raises(StageError, match=r"001-test.csv has a header but no rows"):
        prepare_splits(tmp_path / "raw", Prepare())


def hub_split(frame: pd.DataFrame, names: list[str], path) -> None:
    """A split as fetch writes a Hub dataset's: Parquet from `datasets`, ClassLabel kept."""
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names)})
    rows = {"text": frame["text"].tolist(),
            "label": [names.index(x) for x in frame["label"]]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))


def test_hub_class_labels_are_mapped_by_name_not_position(tmp_path):
    main = raw_main(tmp_path)
    # The dataset numbers positive 0: by position it would flip every label.
    hub_split(make_sentences(40, seed=6), ["positive", "negative"], main / "train.parquet")
    hub_split(make_sentences(10, seed=7), ["positive", "negative"], main / "test.parquet")
    splits, _ = prepare_splits(tmp_path / "raw", Prepare())
    truth = {**make_sentences(40, seed=6).set_index("text")["label"],
             **make_sentences(10, seed=7).set_index("text")["label"]}
    for frame in splits.values():
        assert [LABELS[i] for i in frame["label"]] == [truth[t] for t in frame["text"]]


def test_hub_class_labels_that_do_not_match_the_labels_name_both_lists(tmp_path):
    main = raw_main(tmp_path)
    hub_split(make_sentences(10).assign(label=lambda f: f["label"].str[:3]), ["neg", "pos"],
              main / "train.parquet")
    with pytest.raises(StageError, match=r"train.parquet: column 'label' is a ClassLabel with "
                       r"names \['neg', 'pos'\], but prepare.labels is \['negative', "
                       r"'positive'\]"):
        prepare_splits(tmp_path / "raw", Prepare())


def acl_imdb(root, rows: dict[str, dict[str, list[str]]]):
    """IMDB's aclImdb layout: <split>/<label>/<id>_<rating>.txt, plus what is not data."""
    for split, by_label in rows.items():
        for label, texts in by_label.items():
            (root / split / label).mkdir(parents=True)
            for i, text in enumerate(texts):
                (root / split / label / f"{i}_7.txt").write_text(text, encoding="utf-8")
        (root / split / "urls_pos.txt").write_text("http://example.com\n")
        (root / split / "labeledBow.feat").write_text("0:1\n")
    (root / "README").write_text("Large Movie Review Dataset\n")
    (root / "imdb.vocab").write_text("the\n")
    return root


def test_label_folders_are_fetched_and_read_with_their_splits(tmp_path):
    texts = make_sentences(40, seed=8)
    by = {label: texts[texts["label"] == label]["text"].tolist() for label in LABELS}
    source = acl_imdb(tmp_path / "aclImdb", {
        "train": {"neg": by["negative"][:15], "pos": by["positive"][:15],
                  "unsup": ["no label here"]},
        "test": {"neg": by["negative"][15:], "pos": by["positive"][15:]}})
    main = raw_main(tmp_path)
    copy_tables(source, main)
    copied = sorted(str(p.relative_to(main)) for p in main.rglob("*") if p.is_file())
    assert len(copied) == 41 and "train/unsup/0_7.txt" in copied  # texts only, layout kept
    assert not [p for p in copied if p.endswith(("README", ".vocab", ".feat", "urls_pos.txt"))]
    splits, summary = prepare_splits(tmp_path / "raw", Prepare(labels=["neg", "pos"]))
    assert sorted(splits["test"]["text"]) == sorted(by["negative"][15:] + by["positive"][15:])
    assert "no label here" not in set().union(*(set(f["text"]) for f in splits.values()))
    assert summary["labels"]["test"] == {"neg": 5, "pos": 5}
    assert summary["split_from"]["validation"].startswith("carved from train")


def test_label_folders_without_splits_are_split_by_class(tmp_path):
    texts = make_sentences(30, seed=9)
    main = raw_main(tmp_path)
    for label in LABELS:
        (main / label).mkdir()
        for i, text in enumerate(texts[texts["label"] == label]["text"]):
            (main / label / f"{i}.txt").write_text(text)
    splits, summary = prepare_splits(tmp_path / "raw", Prepare())
    assert sum(summary["rows"].values()) == 30
    assert summary["split_from"]["test"] == "stratified by class from all rows"


def test_an_empty_or_missing_label_folder_is_named(tmp_path):
    main = raw_main(tmp_path)
    (main / "train" / "negative").mkdir(parents=True)
    (main / "train" / "positive").mkdir()
    (main / "train" / "positive" / "1.txt").write_text("great")
    with pytest.raises(StageError, match=r"train/negative: empty label folder; expected .txt "
                       r"files, one text of label 'negative' each"):
        read_examples(main, Columns("text", "label", LABELS))
    with pytest.raises(StageError, match=r"no folder for label\(s\) \['neutral'\]"):
        read_examples(main, Columns("text", "label", [*LABELS, "neutral"]))


def test_sentence_pairs_are_kept_and_deduplicated_as_pairs(tmp_path):
    main = raw_main(tmp_path)
    frame = pd.DataFrame({"premise": ["a good film"] * 4 + ["a bad film"] * 4,
                          "hypothesis": ["it was good", "it was bad", "it was good",
                                         "great", "it was bad", "it was good", "awful", "x"],
                          "label": [1, 0, 1, 1, 1, 0, 1, 0]})
    frame.to_csv(main / "000-pairs.csv", index=False)
    cfg = Prepare(text_column="premise", text_pair_column="hypothesis",
                  validation_size=0.2, test_size=0.2)
    splits, summary = prepare_splits(tmp_path / "raw", cfg)
    kept = pd.concat(splits.values())
    assert set(zip(kept["text"], kept["text_pair"])) == {
        ("a good film", "it was good"), ("a good film", "it was bad"), ("a good film", "great"),
        ("a bad film", "it was bad"), ("a bad film", "it was good"), ("a bad film", "awful"),
        ("a bad film", "x")}  # one repeat of a pair dropped; same premise, other pair: kept
    assert summary["dropped"]["main"]["duplicate"] == 1


def test_a_missing_pair_column_names_the_file_and_the_setting(tmp_path):
    main = raw_main(tmp_path)
    make_sentences(10).to_csv(main / "000-reviews.csv", index=False)
    with pytest.raises(StageError, match=r"000-reviews.csv: missing column\(s\) \['question'\] "
                       r"\(prepare.text_column / prepare.text_pair_column / "
                       r"prepare.label_column\)"):
        prepare_splits(tmp_path / "raw", Prepare(text_pair_column="question"))


def test_a_hub_dataset_keeps_its_splits_through_fetch_and_prepare(tmp_path):
    """The README's IMDB setup (`stanfordnlp/imdb`, hf_splits [train, test], labels
    [neg, pos]) on a local stand-in in IMDB's Hub layout, through the real
    `datasets.load_dataset` path of the fetch stage."""
    from finetuning.config import Fetch
    from finetuning.data.fetching import fetch_hub_dataset

    hub = tmp_path / "imdb" / "plain_text"
    hub.mkdir(parents=True)
    short = {"negative": "neg", "positive": "pos"}
    train, test = (make_sentences(n, seed=s).assign(label=lambda f: f["label"].map(short))
                   for n, s in ((40, 10), (12, 11)))
    hub_split(train, ["neg", "pos"], hub / "train-00000-of-00001.parquet")
    hub_split(test, ["neg", "pos"], hub / "test-00000-of-00001.parquet")
    main = raw_main(tmp_path)
    record = fetch_hub_dataset(str(tmp_path / "imdb"), main,
                               Fetch(hf_splits=["train", "test"]))
    assert record["splits"] == ["train", "test"]
    assert sorted(p.name for p in main.iterdir()) == ["test.parquet", "train.parquet"]
    splits, summary = prepare_splits(tmp_path / "raw", Prepare(labels=["neg", "pos"]))
    assert sorted(splits["test"]["text"]) == sorted(test["text"])
    assert summary["split_from"]["test"] == "the source's own"
    with pytest.raises(StageError, match=r"dataset .*imdb has no split 'validation'; it has "
                       r"\['train', 'test'\]"):
        fetch_hub_dataset(str(tmp_path / "imdb"), tmp_path, Fetch(hf_splits=["validation"]))


def test_hidden_folders_and_files_and_a_bom_are_not_data(tmp_path):
    main = raw_main(tmp_path)
    for label, text in (("negative", "\ufeffbad film"), ("positive", "great film")):
        (main / "train" / label).mkdir(parents=True)
        (main / "train" / label / "1.txt").write_text(text, encoding="utf-8")
        (main / "train" / label / "._1.txt").write_bytes(b"\x00\x05\x16\x07 mac")
    (main / "__MACOSX" / "train").mkdir(parents=True)
    (main / ".ipynb_checkpoints").mkdir()
    frame = read_examples(main, Columns("text", "label", LABELS))
    assert frame["text"].tolist() == ["bad film", "great film"]
    assert frame["split"].tolist() == ["train", "train"]


def test_out_of_domain_sets_need_no_split_column(tmp_path):
    main = raw_main(tmp_path)
    frame = make_sentences(30, seed=12).assign(part=["train"] * 20 + ["test"] * 10)
    frame.to_csv(main / "000-all.csv", index=False)
    (tmp_path / "raw" / "ood" / "other").mkdir(parents=True)
    make_sentences(6, seed=13).to_csv(tmp_path / "raw" / "ood" / "other" / "000-o.csv",
                                      index=False)
    splits, _ = prepare_splits(tmp_path / "raw", Prepare(split_column="part"))
    assert len(splits["ood_other"]) == 6 and len(splits["test"]) == 10


def test_pairs_with_tail_truncation_are_refused_by_the_params_check():
    from finetuning.config import config_from_dict
    from finetuning.errors import ConfigError
    from tests.conftest import repo_params

    params = repo_params()
    params["prepare"]["text_pair_column"] = "hypothesis"
    params["tokenize"]["truncation"] = "tail"
    with pytest.raises(ConfigError, match=r"tokenize.truncation must be head when "
                       r"prepare.text_pair_column is set"):
        config_from_dict(params)
