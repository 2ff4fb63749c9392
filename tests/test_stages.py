"""Smoke test of every stage's entry point in order, on the tiny model and ~60 rows."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from safetensors.torch import load_file

from finetuning.config import Config
from finetuning.data.batching import load_splits
from finetuning.monitoring.events import load_events
from tests.conftest import BIN, run_stage_main, write_params

TUTORIAL_SCALARS = {"train/loss", "train/accuracy", "train/learning_rate", "eval/loss",
                    "eval/accuracy"}
TUTORIAL_HISTOGRAMS = {"input_ids", "attention_mask", "logits", "targets"}


@pytest.fixture(scope="module")
def run_dir(pipeline_run) -> tuple[Path, Config]:
    """The session's one run of every stage (conftest.pipeline_run)."""
    return pipeline_run


def test_fetch_copies_data_and_model(run_dir):
    root, cfg = run_dir
    raw = Path(cfg.paths.raw_data)
    assert [p.name for p in (raw / "main").iterdir()] == ["000-reviews.csv"]
    assert (raw / "ood" / "synthetic").is_dir()
    base = Path(cfg.paths.base_model)
    assert (base / "model.safetensors").is_file()
    assert json.loads((raw / "source.json").read_text())["model"]["source"] == cfg.fetch.model
    # the weights' sha256, recorded once for train's checkpoint fingerprint
    digest = hashlib.sha256(b"model.safetensors\0" + (base / "model.safetensors").read_bytes())
    assert (base / "weights.sha256").read_text() == digest.hexdigest() + "\n"


def test_prepare_writes_disjoint_splits_and_counts(run_dir):
    _, cfg = run_dir
    counts = json.loads(Path(cfg.paths.prepare_metrics).read_text())
    assert counts["rows"] == {"train": 48, "validation": 6, "test": 6, "ood_synthetic": 20}
    assert counts["labels"]["test"] == {"negative": 3, "positive": 3}


def test_tokenize_keeps_rows_and_caps_length(run_dir):
    _, cfg = run_dir
    splits = load_splits(cfg.paths.tokenized)
    assert set(splits) == {"train", "validation", "test", "ood_synthetic"}
    assert len(splits["train"]) == 48
    assert splits["train"].lengths.max() <= cfg.tokenize.max_length
    stats = json.loads(Path(cfg.paths.tokenize_metrics).read_text())
    assert stats["train"]["rows"] == 48


def test_train_writes_model_logs_and_figures(run_dir):
    _, cfg = run_dir
    figures = json.loads(Path(cfg.paths.train_metrics).read_text())
    assert figures["steps"] == 12  # 48 rows / batch 8 = 6 steps per epoch, 2 epochs
    assert figures["samples_per_second"] > 0
    assert figures["selected_step"] in (6, 12) and figures["stopped_early"] is False
    assert figures["calibration"]["temperature"] > 0
    # train.json holds only what compares runs; what ran is beside it
    assert not {"hardware", "device", "validation"} & set(figures)
    ran = json.loads(Path(cfg.paths.train_run).read_text())
    assert ran["device"] == "cpu" and ran["world_size"] == 1 and "CPU" in ran["hardware"]
    assert f"step {figures['selected_step']}" not in ran["selected_by"]  # says why, not what
    assert "validation accuracy" in ran["selected_by"]
    acc = load_events(cfg.paths.tensorboard)
    tags = acc.Tags()
    assert TUTORIAL_SCALARS <= set(tags["scalars"])
    assert TUTORIAL_HISTOGRAMS <= set(tags["histograms"])
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [6, 12]
    lrs = [e.value for e in acc.Scalars("train/learning_rate")]
    # Warmup over ceil(0.1 x 12) = 2 steps reaches the peak at the step-2 log, then decays.
    assert lrs[0] == pytest.approx(cfg.train.learning_rate, rel=1e-6)  # float32 in events
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_finetuned_folder_loads_in_transformers_pipeline(run_dir):
    from transformers import pipeline

    _, cfg = run_dir
    classify = pipeline("text-classification", model=cfg.paths.finetuned, device=-1)
    result = classify(["the movie was great", "the movie was awful"])
    assert {r["label"] for r in result} <= set(cfg.prepare.labels)
    config = json.loads((Path(cfg.paths.finetuned) / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_evaluate_writes_metrics_per_split(run_dir):
    _, cfg = run_dir
    metrics = json.loads(Path(cfg.paths.eval_metrics).read_text())
    assert set(metrics) == {"validation", "test", "ood"}
    assert set(metrics["ood"]) == {"synthetic"}
    for scores in (metrics["test"], metrics["validation"], metrics["ood"]["synthetic"]):
        assert set(scores) >= {"accuracy", "precision", "recall", "f1", "loss"}
        assert 0.0 <= scores["accuracy"] <= 1.0
    assert metrics["test"]["count"] == 6
    classes = json.loads(Path(cfg.paths.eval_classes).read_text())
    assert set(classes["ood"]) == {"synthetic"}
    assert {n: c["support"] for n, c in classes["test"].items()} == {"negative": 3,
                                                                     "positive": 3}
    for split in ("validation", "test"):
        f1s = [c["f1"] for c in classes[split].values()]
        assert np.mean(f1s) == pytest.approx(metrics[split]["f1"])
    predictions = Path(cfg.paths.predictions) / "test.csv"
    assert len(predictions.read_text().splitlines()) == 7


def test_export_writes_onnx_graphs_that_match_torch(run_dir):
    _, cfg = run_dir
    folder = Path(cfg.paths.onnx)
    assert {"model.onnx", "model-int8.onnx", "config.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()}
    figures = json.loads(Path(cfg.paths.export_metrics).read_text())
    assert set(figures) == {"torch_fp32", "onnx_fp32", "onnx_int8"}
    common = {"accuracy", "latency_ms_b1", "latency_ms_b1_p95", "samples_per_second_b32",
              "size_mb"}
    assert set(figures["torch_fp32"]) == common
    assert set(figures["onnx_fp32"]) == set(figures["onnx_int8"]) == common | {
        "max_abs_logit_diff"}
    assert figures["onnx_fp32"]["max_abs_logit_diff"] <= 1e-4
    graph = onnx.load(str(folder / "model.onnx"))  # single texts: no token types to feed
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    evaluated = json.loads(Path(cfg.paths.eval_metrics).read_text())["test"]["accuracy"]
    assert figures["torch_fp32"]["accuracy"] == evaluated  # predict's path = evaluate's
    assert figures["onnx_fp32"]["accuracy"] == evaluated
    for backend in figures.values():
        assert 0 < backend["latency_ms_b1"] <= backend["latency_ms_b1_p95"]


def test_report_has_table_and_curves(run_dir):
    _, cfg = run_dir
    text = (Path(cfg.paths.reports) / "report.md").read_text()
    assert "| test |" in text and "| ood/synthetic |" in text
    assert (Path(cfg.paths.reports) / "curves.png").stat().st_size > 1000


def test_runs_are_deterministic(run_dir, tmp_path):
    """Same params and seed on CPU: the same trained weights, hence the same metrics."""
    root, cfg = run_dir
    params = config_params(root)
    again = root / f"again-{tmp_path.name}"  # the run's own folder: paths stay inside it
    params["paths"].update(trained=str(again / "m"), tensorboard=str(again / "tb"),
                           train_metrics=str(again / "t.json"),
                           train_run=str(again / "r.json"), checkpoints=str(again / "ck"))
    run_stage_main("train", write_params(params, root / f"{again.name}.yaml"))
    first = load_file(Path(cfg.paths.trained) / "model.safetensors")
    second = load_file(again / "m" / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


def config_params(root: Path) -> dict:
    """The params file the run in `root` used."""
    return yaml.safe_load((root / "params.yaml").read_text())


def test_tensorboard_has_every_tag_group_with_increasing_steps(run_dir):
    _, cfg = run_dir
    acc = load_events(cfg.paths.tensorboard)
    tags = acc.Tags()
    scalars, histograms = set(tags["scalars"]), set(tags["histograms"])
    assert {"train/grad_norm", "train/samples_per_second", "train/tokens_per_second",
            "train/padding_efficiency", "train/epoch", "eval/f1"} <= scalars
    assert {"selection/selected_step", "calibration/temperature", "calibration/ece_before",
            "calibration/ece_after"} <= scalars
    assert not any(tag.startswith("final_") for tag in scalars)  # evaluate's run has them
    assert {"sequence_length", "weights/embeddings", "weights/classifier",
            "gradients/encoder.layer.0", "gradients/classifier"} <= histograms
    assert {"pr/positive", "pr/negative", "config/text_summary",
            "eval/mistakes/text_summary"} <= set(tags["tensors"])
    assert tags["images"] == ["eval/confusion_matrix"]
    for tag in tags["scalars"]:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), tag
    for tag in tags["histograms"]:
        steps = [e.step for e in acc.Histograms(tag)]
        assert steps == sorted(set(steps)) and steps == [3, 6, 9, 12], tag
    projector = (Path(cfg.paths.tensorboard) / "projector_config.pbtxt").read_text()
    assert 'metadata_path: "00012/validation/metadata.tsv"' in projector
    metadata = (Path(cfg.paths.tensorboard) / "00012/validation/metadata.tsv").read_text()
    assert metadata.splitlines()[0] == "label\tpredicted\ttext" and len(metadata.splitlines()) == 7


def test_evaluate_run_in_tensorboard_equals_eval_json(run_dir):
    """Scored once: each final_<split>/<metric> scalar is eval.json's value (as float32,
    what event files hold), at the step whose weights were kept."""
    _, cfg = run_dir
    acc = load_events(cfg.paths.eval_tensorboard)
    metrics = json.loads(Path(cfg.paths.eval_metrics).read_text())
    kept = json.loads(Path(cfg.paths.train_metrics).read_text())["selected_step"]
    flat = {"validation": metrics["validation"], "test": metrics["test"],
            "ood_synthetic": metrics["ood"]["synthetic"]}
    tags = set(acc.Tags()["scalars"])
    assert tags == {f"final_{s}/{k}" for s, r in flat.items() for k in r if k != "count"}
    for split, report in flat.items():
        for key in set(report) - {"count"}:
            (event,) = acc.Scalars(f"final_{split}/{key}")
            assert event.step == kept
            assert np.float32(event.value) == np.float32(report[key]), (split, key)


def test_hparams_run_has_final_metrics(run_dir):
    _, cfg = run_dir
    acc = load_events(Path(cfg.paths.eval_tensorboard) / "hparams")
    assert {"hparam/test_accuracy", "hparam/validation_f1", "hparam/test_ece"} <= set(
        acc.Tags()["scalars"])
    test_accuracy = json.loads(Path(cfg.paths.eval_metrics).read_text())["test"]["accuracy"]
    assert np.float32(acc.Scalars("hparam/test_accuracy")[0].value) == np.float32(test_accuracy)
    plugins = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugins)


def test_tensorboard_serves_the_logs_on_loopback(run_dir):
    _, cfg = run_dir
    port = free_port()
    spec = f"train:{cfg.paths.tensorboard},eval:{cfg.paths.eval_tensorboard}"  # = Makefile's
    proc = subprocess.Popen([str(BIN / "tensorboard"), "--logdir_spec", spec,
                             "--host", "127.0.0.1", "--port", str(port)],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        runs = get_json(f"http://127.0.0.1:{port}/data/runs", deadline=60)
        assert {"train/.", "eval/.", "eval/hparams"} <= set(runs)
        tags = get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", deadline=10)
        assert "train/loss" in tags["train/."] and "eval/accuracy" in tags["train/."]
        assert "final_test/accuracy" in tags["eval/."]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, deadline: float):
    """GET `url` as JSON, retrying until the server is up or `deadline` seconds pass."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def test_model_card_metadata_parses_and_equals_the_eval_metrics(run_dir):
    _, cfg = run_dir
    text = (Path(cfg.paths.finetuned) / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---", 2)[1])
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["library_name"] == "transformers"
    assert meta["datasets"] == [cfg.fetch.data] and meta["license"] == "other"  # tiny base: none
    evaluated = json.loads(Path(cfg.paths.eval_metrics).read_text())
    (index,) = meta["model-index"]
    results = {r["dataset"]["split"]: {m["type"]: m["value"] for m in r["metrics"]}
               for r in index["results"]}
    assert set(results) == {"validation", "test", "ood/synthetic"}
    for split, scores in (("test", evaluated["test"]), ("validation", evaluated["validation"]),
                          ("ood/synthetic", evaluated["ood"]["synthetic"])):
        assert results[split] == {k: scores[k] for k in ("accuracy", "f1", "precision",
                                                         "recall", "loss")}
    body = text.split("---", 2)[2]
    for heading in ("Intended uses and limits", "Training data", "Training procedure",
                    "Evaluation", "Deployment", "How to use", "Monitoring"):
        assert f"## {heading}" in body
    assert f"{evaluated['test']['accuracy']:.4f}" in body
    assert f"out-of-domain `synthetic` texts its accuracy is " \
           f"{evaluated['ood']['synthetic']['accuracy']:.4f}" in body
    temperature = json.loads(Path(cfg.paths.train_metrics).read_text())["calibration"][
        "temperature"]
    assert (f"T = {temperature:.4f}, fitted on the validation split" in body
            and f"test expected calibration error {evaluated['test']['ece']:.4f}" in body)


def test_the_deliverable_folder_carries_the_trained_model_and_drift_reference(run_dir):
    _, cfg = run_dir
    trained, shipped = Path(cfg.paths.trained), Path(cfg.paths.finetuned)
    assert (trained / "model.safetensors").read_bytes() == (
        shipped / "model.safetensors").read_bytes()
    for folder in (shipped, Path(cfg.paths.onnx)):
        reference = json.loads((folder / "drift_reference.json").read_text())
        assert reference["labels"] == cfg.prepare.labels and reference["rows"] == 6
        assert sum(reference["label_shares"]) == pytest.approx(1.0)
        assert sum(reference["length_shares"]) == pytest.approx(1.0)
