"""Fine-tuning learns: the tiny BERT on a synthetic task it can learn (one sentiment word
in filler decides the label) reaches >= 0.9 validation accuracy within a few seconds of
training, and the same run with the learning rate at 0 stays at chance. Without this
pair, a training loop that updates nothing would pass every other test. The same runs
check which weights are kept (`train.select`), early stopping (`train.patience`) and that
the calibration folded into the head is what the saved folder predicts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finetuning.config import load_config
from finetuning.data.batching import collate, load_splits
from finetuning.inference.backends import OnnxBackend, TorchBackend
from finetuning.inference.export import export_onnx
from finetuning.inference.model import load_classifier, predict_logits
from finetuning.metrics import classification_report
from finetuning.monitoring.events import read_scalars
from finetuning.training.checkpoint import CHECKPOINT
from finetuning.training.runtime import init_runtime
from finetuning.training.session import build_trainer

from tests.conftest import (ROOT, kill_after_checkpoint, make_sentences, paths_under,
                            run_stage_main, tiny_params, write_params)


LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["query", "value"],
        "learning_rate": 1e-2}


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


def train_params(root: Path, params: dict, name: str, **train: object) -> Path:
    """A params file for the train stage with `train` overrides, into its own outputs."""
    params = {**params, "train": {**params["train"], **train},
              "paths": {**params["paths"], "trained": str(root / name / "model"),
                        "tensorboard": str(root / name / "tb"),
                        "checkpoints": str(root / name / "ckpt"),
                        "train_metrics": str(root / name / "train.json"),
                        "train_run": str(root / name / "train_run.json")}}
    return write_params(params, root / f"{name}.yaml")  # paths inside its folder


def train(root: Path, params: dict, name: str, **train: object) -> dict:
    """The train stage with `train` overrides into its own outputs; its train.json and
    train_run.json, merged."""
    run_stage_main("train", train_params(root, params, name, **train))
    return {**json.loads((root / name / "train_run.json").read_text()),
            **json.loads((root / name / "train.json").read_text())}


def saved_validation(root: Path, name: str, params: dict) -> dict:
    """Scores of the saved folder on the validation split, in float32."""
    split = load_splits(params["paths"]["tokenized"])["validation"]
    model = load_classifier(root / name / "model")
    logits = predict_logits(model, split, 64, 0, torch.device("cpu"))
    return classification_report(logits, split.labels, 2)


def test_training_runs_with_dropout_on(learnable):
    """from_pretrained gives a model in eval mode (no dropout): train switches it to train
    mode, and a validation pass in between leaves it there."""
    root, params = learnable
    trainer, _ = build_trainer(load_config(train_params(root, params, "dropout")),
                               init_runtime())
    assert all(module.training for module in trainer.module.modules())
    trainer.validate(1)
    assert all(module.training for module in trainer.module.modules())
    trainer.monitor.writer.close()


def test_a_tiny_bert_learns_a_learnable_task(learnable):
    root, params = learnable
    figures = train(root, params, "learns", eval_every=10)
    assert figures["validation"]["accuracy"] >= 0.9
    assert figures["final_train_loss"] < 0.35  # ln 2 = 0.693 is chance
    # select: best by accuracy keeps the first step with the highest validation accuracy
    series = read_scalars(root / "learns" / "tb")["eval/accuracy"]
    assert [step for step, _ in series] == list(range(10, 121, 10))
    best = max(value for _, value in series)
    assert figures["selected_step"] == next(step for step, value in series if value == best)
    assert figures["selected_validation_accuracy"] == pytest.approx(best, abs=1e-6)
    assert read_scalars(root / "learns" / "tb")["selection/selected_step"][-1][1] == \
        figures["selected_step"]
    # the saved folder is those weights, calibrated: same accuracy, the fitted log-loss
    saved, fitted = saved_validation(root, "learns", params), figures["calibration"]
    assert saved["accuracy"] == pytest.approx(best, abs=1e-6)
    assert saved["loss"] == pytest.approx(fitted["loss_after"], rel=1e-3)
    assert fitted["loss_after"] <= fitted["loss_before"]


def test_with_the_learning_rate_at_zero_it_stays_at_chance(learnable):
    figures = train(*learnable, "frozen", learning_rate=0.0)
    assert figures["validation"]["accuracy"] <= 0.7
    assert figures["final_train_loss"] == pytest.approx(0.693, abs=0.05)


def test_patience_stops_a_run_that_stopped_improving(learnable):
    """Learning rate 0: validation never improves after the first pass, so patience 2
    stops at the third validation, and select: best keeps the first."""
    root, params = learnable
    figures = train(root, params, "patient", learning_rate=0.0, eval_every=1, patience=2,
                    select_metric="loss", calibrate=False)
    assert (figures["steps"], figures["stopped_early"], figures["selected_step"]) == (3, True, 1)
    assert "calibration" not in figures
    assert [s for s, _ in read_scalars(root / "patient" / "tb")["eval/loss"]] == [1, 2, 3]


def test_select_last_keeps_the_last_step(learnable):
    root, params = learnable
    figures = train(root, params, "last", epochs=1, select="last", calibrate=False)
    assert figures["selected_step"] == figures["steps"] == 20
    assert "the last step (20)" in figures["selected_by"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_learns_it_too(learnable, precision):
    figures = train(*learnable, precision, precision=precision)
    assert figures["precision"] == precision
    assert figures["validation"]["accuracy"] >= 0.9


def test_lora_under_bf16_learns_too(learnable):
    figures = train(*learnable, "lora-bf16", precision="bf16", method="lora", lora=LORA,
                    epochs=12)
    assert figures["validation"]["accuracy"] >= 0.8


def test_lora_weights_get_their_own_histogram_groups():
    from finetuning.monitoring.monitor import layer_group

    assert layer_group("bert.encoder.layer.1.output.dense.weight") == "encoder.layer.1"
    assert layer_group("base_model.model.bert.encoder.layer.0.attention.self.query."
                       "lora_A.default.weight") == "lora/encoder.layer.0"
    assert layer_group("base_model.model.classifier.modules_to_save.default.weight") == \
        "classifier"
    assert layer_group("bert.embeddings.word_embeddings.weight") == "embeddings"



def test_lora_trains_adapters_and_head_into_a_plain_folder(learnable):
    """train.method: lora: only the adapters and the head train; the saved folder is a
    plain BERT classifier (adapter merged) and the adapter beside it gives the same
    logits on the base through peft."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import pipeline

    root, params = learnable
    figures = train(root, params, "lora", method="lora", lora=LORA, epochs=20)
    hidden, layers = 32, 2  # conftest.build_tiny_model
    adapters = layers * 2 * (8 * hidden + hidden * 8)  # A and B on query and value
    assert figures["trainable_parameters"] == adapters + hidden * 2 + 2  # + classifier
    assert figures["method"] == "lora" and 0 < figures["adapter_mb"] < 2
    logged = read_scalars(root / "lora" / "tb")
    assert logged["model/trainable_parameters"] == [(0, figures["trainable_parameters"])]
    assert logged["model/parameters"][0][1] == figures["num_parameters"]
    assert figures["validation"]["accuracy"] >= 0.8
    folder = root / "lora" / "model"
    keys = set(load_file(folder / "model.safetensors"))
    assert "classifier.weight" in keys and not any("lora" in k or "base_model" in k
                                                   for k in keys)
    assert pipeline("text-classification", model=str(folder))("great")[0]["label"] in (
        "negative", "positive")
    split = load_splits(params["paths"]["tokenized"])["validation"]
    merged = predict_logits(load_classifier(folder), split, 64, 0, torch.device("cpu"))
    base = load_classifier(params["paths"]["base_model"], ["negative", "positive"])
    unmerged = predict_logits(PeftModel.from_pretrained(base, folder / "adapter"), split, 64,
                              0, torch.device("cpu"))
    assert (merged - unmerged).abs().max() <= 1e-5
    # the export stage's graph of the merged folder gives torch's logits
    (root / "lora" / "onnx").mkdir()
    graph = export_onnx(folder, root / "lora" / "onnx", opset=17)
    padded = collate(split, np.arange(len(split)), pad_id=0)  # the tiny vocab's [PAD]
    batch = {key: value.numpy() for key, value in padded.items()}
    onnx = OnnxBackend(graph, "onnx").logits(batch)
    assert np.abs(onnx - TorchBackend(folder).logits(batch)).max() <= 1e-4


def test_a_killed_lora_run_resumes_to_the_same_weights(learnable):
    """SIGKILL after the first checkpoint, train again: the weights of an uninterrupted
    run, bit for bit; the checkpoint held only what trains (adapters and head)."""
    root, params = learnable
    settings = dict(method="lora", lora=LORA, epochs=2, checkpoint_every=10)
    train(root, params, "lora-whole", **settings)
    resumed = train_params(root, params, "lora-resumed", **settings)
    checkpoint = root / "lora-resumed" / "ckpt" / CHECKPOINT
    kill_after_checkpoint([sys.executable, "-m", "stages.train", "--params", str(resumed)],
                          ROOT, checkpoint, timeout=120)
    state = torch.load(checkpoint, weights_only=True)
    assert state["progress"]["step"] == 10
    assert state["model"] and all(".lora_" in k or ".modules_to_save." in k
                                  for k in state["model"])
    run_stage_main("train", resumed)
    whole, again = (root / n / "model" / "model.safetensors" for n in ("lora-whole",
                                                                        "lora-resumed"))
    assert whole.read_bytes() == again.read_bytes()


def test_an_untrained_pooler_trains_with_lora_and_a_trained_one_stays_frozen(tmp_path):
    """A masked-LM checkpoint has no pooler weights: with adapters on query/value only,
    its random pooler would stay frozen, so it trains with the head. The default targets
    put an adapter on a trained pooler; an untrained one trains fully instead."""
    from transformers import BertConfig, BertModel

    from finetuning.config import Lora
    from finetuning.training.lora import trainable_parameters, with_lora

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    counts = {}
    for pooled in (True, False):
        folder = tmp_path / str(pooled)
        BertModel(config, add_pooling_layer=pooled).save_pretrained(folder)
        for targets in (["query", "value"], Lora().target_modules):
            lora = Lora(r=4, target_modules=targets)
            model = with_lora(load_classifier(folder, ["a", "b", "c"]), lora, folder)
            counts[pooled, len(targets)] = trainable_parameters(model)
    adapter, head, pooler = 4 * 16 + 16 * 4, 16 * 3 + 3, 16 * 16 + 16
    assert Lora().target_modules == ["query", "value", "pooler.dense"]
    assert counts == {(True, 2): 2 * adapter + head, (True, 3): 3 * adapter + head,
                      (False, 2): 2 * adapter + head + pooler,
                      (False, 3): 2 * adapter + head + pooler}
