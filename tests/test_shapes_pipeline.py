"""Two data shapes through every stage's real entry point on the tiny model:

* an IMDB-layout folder (`<split>/<label>/*.txt`, with aclImdb's unlabelled `unsup` and
  files that are not data) with three classes, imbalanced, long texts cut head+tail and
  balanced class weights: its own test split reaches evaluate untouched by training;
* sentence pairs in a table: token types through train, evaluate, the ONNX export,
  `finetune predict --text-pair-column`, `finetune serve` and `transformers.pipeline`.
"""
from __future__ import annotations

import json
import random

import httpx
import numpy as np
import onnx
import pandas as pd
import pytest
import yaml

from benchmarks.serving import serving
from finetuning.cli import main as finetune
from finetuning.config import config_from_dict
from finetuning.data.batching import load_splits
from finetuning.data.tokenizer import load_tokenizer
from finetuning.data.truncation import Truncation
from finetuning.inference.predictor import Predictor
from tests.conftest import (FILLER, NEGATIVE, PIPELINE, POSITIVE, paths_under, run_stage_main,
                            tiny_params, write_params)

LABELS = ["neg", "neu", "pos"]


def review(rng: random.Random, label: str, long: bool) -> str:
    """A synthetic review: filler words with one sentiment word (none for neu); a long
    one has its sentiment word at the very end, past max_length."""
    words = rng.sample(FILLER, rng.randint(2, 6))
    word = {"neg": NEGATIVE, "pos": POSITIVE}.get(label)
    if long:
        return " ".join([*words, *rng.choices(FILLER, k=20), *([rng.choice(word)] if word
                                                              else [])])
    if word:
        words.insert(rng.randrange(len(words) + 1), rng.choice(word))
    return " ".join(words)


def write_imdb_layout(root, counts: dict[str, dict[str, int]], seed: int = 0) -> dict:
    """aclImdb's layout with `counts[split][label]` distinct reviews; returns the texts."""
    rng, seen, texts = random.Random(seed), set(), {}
    for split, by_label in counts.items():
        for label, n in by_label.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            while len(texts.setdefault((split, label), [])) < n:
                text = review(rng, label, long=len(texts[(split, label)]) % 4 == 0)
                if text not in seen:
                    seen.add(text)
                    texts[(split, label)].append(text)
            for i, text in enumerate(texts[(split, label)]):
                (folder / f"{i}_{rng.randint(1, 10)}.txt").write_text(text, encoding="utf-8")
        (root / split / "unsup").mkdir()
        (root / split / "unsup" / "0_0.txt").write_text("not labelled at all")
        (root / split / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0453418/\n")
    (root / "README").write_text("Large Movie Review Dataset v1.0\n")
    (root / "imdb.vocab").write_text("the\nand\n")
    return texts


def run_pipeline(root, params: dict):
    """Every stage, in dvc.yaml's order, on `params` with paths under `root`."""
    params = {**params, "paths": paths_under(root)}
    params_file = write_params(params, root / "params.yaml")
    for stage in PIPELINE:
        run_stage_main(stage, params_file)
    return config_from_dict(yaml.safe_load(params_file.read_text()))


@pytest.fixture(scope="module")
def imdb_run(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("imdb")
    texts = write_imdb_layout(root / "aclImdb", {
        "train": {"neg": 36, "neu": 12, "pos": 24}, "test": {"neg": 6, "neu": 6, "pos": 6}})
    params = tiny_params(tiny_model, root)
    params["fetch"].update(data=str(root / "aclImdb"), ood={})
    params["prepare"]["labels"] = LABELS
    params["tokenize"].update(truncation="head+tail", head_tokens=4)
    params["train"]["class_weights"] = "balanced"
    return run_pipeline(root / "run", params), texts


def read(path):
    return json.loads(open(path, encoding="utf-8").read())


def test_the_own_test_split_reaches_evaluate_untouched(imdb_run):
    cfg, texts = imdb_run
    test_texts = sorted(t for (split, _), ts in texts.items() if split == "test" for t in ts)
    predictions = pd.read_csv(f"{cfg.paths.predictions}/test.csv", keep_default_na=False)
    assert sorted(predictions["text"]) == test_texts
    truth = {t: label for (split, label), ts in texts.items() for t in ts}
    assert [truth[t] for t in predictions["text"]] == predictions["label"].tolist()
    prepared = read(cfg.paths.prepare_metrics)
    assert prepared["split_from"] == {"train": "the source's own", "test": "the source's own",
                                      "validation": "carved from train (0.1)"}
    train = set(pd.read_parquet(f"{cfg.paths.prepared}/train.parquet")["text"])
    assert not train & set(test_texts) and "not labelled at all" not in train
    assert prepared["rows"]["test"] == 18 and read(cfg.paths.eval_metrics)["test"]["count"] == 18


def test_long_texts_keep_head_and_tail_in_training_and_in_the_model(imdb_run):
    cfg, texts = imdb_run
    stats = read(cfg.paths.tokenize_metrics)
    assert stats["test"]["truncated"] == 6 and stats["test"]["max_length"] == 16
    tokenizer = load_tokenizer(cfg.paths.base_model)
    prepared = pd.read_parquet(f"{cfg.paths.prepared}/test.parquet")
    tokens = load_splits(cfg.paths.tokenized)["test"]
    long = [i for i, t in enumerate(prepared["text"]) if len(t.split()) > 14]
    assert len(long) == 6
    for row in long:
        body = tokenizer(prepared["text"][row], add_special_tokens=False)["input_ids"]
        ids = tokens.tokens[tokens.offsets[row]:tokens.offsets[row + 1]].tolist()
        assert ids[1:-1] == body[:4] + body[-10:]  # 4 head + 10 tail tokens of 14
    assert Predictor(cfg.paths.finetuned).truncation == Truncation(16, "head+tail", 4)


def test_three_classes_are_scored_weighted_and_reported(imdb_run):
    cfg, _ = imdb_run
    counts = read(cfg.paths.prepare_metrics)["labels"]["train"]
    n = sum(counts.values())
    weights = read(cfg.paths.train_run)["class_weights"]
    assert weights == pytest.approx({k: n / (3 * c) for k, c in counts.items()}, abs=1e-4)
    assert weights["neu"] > weights["pos"] > weights["neg"]  # the rarest weighs most
    classes = read(cfg.paths.eval_classes)["test"]
    assert set(classes) == set(LABELS)
    assert {"precision", "recall", "f1"} <= set(classes["neu"])
    assert read(cfg.paths.baseline_metrics)["test"]["count"] == 18
    report = open(f"{cfg.paths.reports}/report.md", encoding="utf-8").read()
    for label in LABELS:
        assert f"Average precision of '{label}' against the rest" in report
    assert "micro average over classes" in report and "class weights | neg " in report
    assert "train the source's own, validation carved from train (0.1), test the source's " \
           "own" in report and "tokenize.truncation | head+tail" in report


PAIRS = [("the film was great", "it was good"), ("the film was great", "it was bad"),
         ("awful plot", "it was bad"), ("awful plot", "a lovely story")]


def pair_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Premise and hypothesis reviews; `same` when both carry the same polarity."""
    rng, rows, seen = random.Random(seed), [], set()
    while len(rows) < n:
        a, b = rng.choice(["neg", "pos"]), rng.choice(["neg", "pos"])
        pair = (review(rng, a, False), review(rng, b, False))
        if pair not in seen:
            seen.add(pair)
            rows.append({"premise": pair[0], "hypothesis": pair[1],
                         "label": "same" if a == b else "different"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("pairs")
    pair_rows(80).to_csv(root / "pairs.csv", index=False)
    params = tiny_params(tiny_model, root)
    params["fetch"].update(data=str(root / "pairs.csv"), ood={})
    params["prepare"].update(text_column="premise", text_pair_column="hypothesis",
                             labels=["different", "same"])
    return run_pipeline(root / "run", params)


def test_pairs_train_with_token_types_and_export_with_them(pair_run):
    cfg = pair_run
    split = load_splits(cfg.paths.tokenized)["test"]
    assert split.types is not None and set(np.unique(split.types)) == {0, 1}
    graph = onnx.load(f"{cfg.paths.onnx}/model.onnx")
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask",
                                                   "token_type_ids"]
    exported = read(cfg.paths.export_metrics)
    assert exported["onnx_fp32"]["max_abs_logit_diff"] < 1e-4
    assert exported["onnx_fp32"]["accuracy"] == exported["torch_fp32"]["accuracy"]
    predictions = pd.read_csv(f"{cfg.paths.predictions}/test.csv")
    assert list(predictions.columns[:3]) == ["text", "text_pair", "label"]
    report = open(f"{cfg.paths.reports}/report.md", encoding="utf-8").read()
    assert " ‖ " in report.split("most confident mistakes")[1]


def test_predict_reads_pairs_from_a_table(pair_run, tmp_path, capsys):
    model = pair_run.paths.finetuned
    frame = pd.DataFrame({"q": [a for a, _ in PAIRS], "h": [b for _, b in PAIRS]})
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    assert finetune(["predict", model, str(tmp_path / "pairs.csv"), "--text-column", "q",
                     "--text-pair-column", "h"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["text"], r["text_pair"]) for r in rows] == PAIRS
    predictor = Predictor(model)
    expected = predictor.predict([a for a, _ in PAIRS], pairs=[b for _, b in PAIRS])
    assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected])
    swapped = predictor.predict([b for _, b in PAIRS], pairs=[a for a, _ in PAIRS])
    assert [e["scores"] for e in expected] != [s["scores"] for s in swapped]  # order counts
    (tmp_path / "in.txt").write_text("a\n")
    assert finetune(["predict", model, str(tmp_path / "in.txt"), "--text-pair-column",
                     "h"]) == 1
    assert "sentence pairs need a table input" in capsys.readouterr().err
    assert finetune(["predict", model, str(tmp_path / "in.txt")]) == 1  # no pairs given
    assert "was trained on sentence pairs (prepare.text_pair_column): give each text its " \
           "pair (predict: --text-pair-column" in capsys.readouterr().err


def test_serve_and_transformers_pipeline_take_pairs_as_hugging_face_does(pair_run, tmp_path):
    from transformers import pipeline

    model = pair_run.paths.finetuned
    expected = Predictor(model).predict([a for a, _ in PAIRS], pairs=[b for _, b in PAIRS])
    inputs = [{"text": a, "text_pair": b} for a, b in PAIRS]
    with serving(model, log=tmp_path / "serve.log") as (port, _):
        url = f"http://127.0.0.1:{port}/predict"
        many = httpx.post(url, json={"inputs": inputs}, timeout=30).json()
        one = httpx.post(url, json={"inputs": inputs[1]}, timeout=30).json()
        bad = httpx.post(url, json={"inputs": {"text": "x", "pair": "y"}}, timeout=30)
        single = httpx.post(url, json={"inputs": [inputs[0], "just a text"]}, timeout=30)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
    assert [rows[0]["score"] for rows in many] == pytest.approx(
        [e["score"] for e in expected], abs=1e-6)
    assert one[0][0]["score"] == pytest.approx(expected[1]["score"], abs=1e-6)
    assert bad.status_code == 422 and single.status_code == 422
    assert "a request mixes single texts and sentence pairs" in single.json()["error"]
    assert health.json()["texts"] == 5  # refused requests never reached the model
    hf = pipeline("text-classification", model=model, device="cpu")
    for item, ours in zip(inputs, expected):
        theirs = hf(item)
        theirs = theirs[0] if isinstance(theirs, list) else theirs
        assert theirs["label"] == ours["label"]
        assert theirs["score"] == pytest.approx(ours["score"], abs=1e-5)
