"""Fine-tuning learns: the tiny BERT on a synthetic task it can learn (one sentiment word
in filler decides the label) reaches >= 0.9 validation accuracy within a few seconds of
training, and the same run with the learning rate at 0 stays at chance. Without this
pair, a training loop that updates nothing would pass every other test."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import (make_sentences, paths_under, run_stage_main, tiny_params,
                            write_params)


@pytest.fixture(scope="module")
def learnable(tmp_path_factory, tiny_model):
    """400 synthetic reviews, prepared and tokenized once; params for a short run."""
    root = tmp_path_factory.mktemp("learnable")
    make_sentences(400, seed=7).to_csv(root / "reviews.csv", index=False)
    params = tiny_params(tiny_model, root)
    params["fetch"].update(data=str(root / "reviews.csv"), ood={})
    params["train"].update(epochs=6, batch_size=16, learning_rate=3e-3, checkpoint_every=0)
    params["tensorboard"].update(histogram_every=0, embeddings=0, mistakes=0)
    params["paths"] = paths_under(root)
    for stage in ("fetch", "prepare", "tokenize"):
        run_stage_main(stage, write_params(params, root / "params.yaml"))
    return root, params


def train(root: Path, params: dict, name: str, **train: object) -> dict:
    """The train stage with `train` overrides into its own outputs; its metrics."""
    params = {**params, "train": {**params["train"], **train},
              "paths": {**params["paths"], "trained": str(root / name / "model"),
                        "tensorboard": str(root / name / "tb"),
                        "checkpoints": str(root / name / "ckpt"),
                        "train_metrics": str(root / name / "train.json")}}
    run_stage_main("train", write_params(params, root / name / "params.yaml"))
    return json.loads((root / name / "train.json").read_text())


def test_a_tiny_bert_learns_a_learnable_task(learnable):
    figures = train(*learnable, "learns")
    assert figures["validation"]["accuracy"] >= 0.9
    assert figures["final_train_loss"] < 0.35  # ln 2 = 0.693 is chance


def test_with_the_learning_rate_at_zero_it_stays_at_chance(learnable):
    figures = train(*learnable, "frozen", learning_rate=0.0)
    assert figures["validation"]["accuracy"] <= 0.7
    assert figures["final_train_loss"] == pytest.approx(0.693, abs=0.05)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_learns_it_too(learnable, precision):
    figures = train(*learnable, precision, precision=precision)
    assert figures["precision"] == precision
    assert figures["validation"]["accuracy"] >= 0.9
