"""Watching the model in use: the drift figures (PSI of predicted labels and token lengths
against the validation reference), the service's drift window and its alarm, and the
summary `finetune predict` writes. The served and predicted model is the session's tiny
fine-tuned one, whose folder carries the reference the evaluate stage recorded."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from benchmarks.serving import serving
from finetuning import cli
from finetuning.inference.predictor import Predictor, Scored
from finetuning.inference.telemetry import Telemetry
from finetuning.monitoring.drift import (DriftWatch, DriftWindow, build_reference, drift,
                                         read_reference, summarize)

LABELS = ["negative", "positive"]


def sample(rng: np.random.Generator, n: int, positive: float, mean_length: float):
    """Predicted labels and token lengths of `n` texts."""
    predicted = (rng.random(n) < positive).astype(np.int64)
    return predicted, np.clip(rng.poisson(mean_length, n), 3, 512)


@pytest.fixture(scope="module")
def reference():
    """A validation split of 2,000 texts, 45% predicted positive, ~60 tokens long."""
    return build_reference(LABELS, *sample(np.random.default_rng(0), 2000, 0.45, 60))


def test_psi_is_low_on_validation_like_traffic_and_high_on_a_shifted_one(reference):
    rng = np.random.default_rng(1)
    like = drift(reference, *sample(rng, 1000, 0.45, 60))
    assert like["label_psi"] < 0.02 and like["length_psi"] < 0.05
    one_label = drift(reference, *sample(rng, 1000, 1.0, 60))
    assert one_label["label_psi"] > 0.25 and one_label["length_psi"] < 0.05
    longer = drift(reference, *sample(rng, 1000, 0.45, 180))
    assert longer["length_psi"] > 0.25 and longer["label_psi"] < 0.02


def test_the_window_waits_for_its_minimum_and_forgets_old_traffic(reference):
    rng = np.random.default_rng(2)
    window = DriftWindow(reference, size=500, minimum=200)
    assert window.add(*sample(rng, 150, 1.0, 200)) is None  # too few to judge
    shifted = window.add(*sample(rng, 350, 1.0, 200))
    assert shifted["window"] == 500 and min(shifted["label_psi"], shifted["length_psi"]) > 1
    recovered = window.add(*sample(rng, 500, 0.45, 60))  # the shifted texts rolled out
    assert recovered["window"] == 500
    assert max(recovered["label_psi"], recovered["length_psi"]) < 0.1


def test_telemetry_warns_once_when_drift_crosses_and_says_when_it_is_back(reference, caplog):
    telemetry = Telemetry(LABELS, reference, DriftWatch(window=100, minimum=50, threshold=0.25))
    rng = np.random.default_rng(3)

    def feed(positive: float, length: float) -> None:
        predicted, lengths = sample(rng, 100, positive, length)
        logits = np.stack([1 - predicted, predicted], axis=1).astype(np.float32)
        telemetry.observe_batch(Scored(logits, lengths, lengths > 128))

    with caplog.at_level(logging.INFO, logger="finetuning.inference.telemetry"):
        feed(0.45, 60)
        assert not telemetry.status()["alarm"] and not caplog.records
        feed(1.0, 200)
        feed(1.0, 200)
        feed(0.45, 60)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the last 100 predictions differ" in warnings[0].message
    assert "drift back under 0.25" in caplog.records[-1].message
    status = telemetry.status()
    assert status["alarm"] is False and status["latest"]["window"] == 100
    assert status | {"latest": None} == {"window": 100, "minimum": 50, "threshold": 0.25,
                                         "reference": True, "latest": None, "alarm": False}


def validation_texts(cfg) -> list[str]:
    return pd.read_parquet(Path(cfg.paths.prepared) / "validation.parquet")["text"].tolist()


def shifted_texts(cfg) -> list[str]:
    """Long texts of one true label: each four positive test reviews run together."""
    test = pd.read_parquet(Path(cfg.paths.prepared) / "test.parquet")
    positive = test.loc[test["label"] == cfg.prepare.labels.index("positive"), "text"].tolist()
    return [" ".join(positive[i:i + 4] * 2) for i in range(len(positive))]


def test_served_drift_stays_low_on_validation_texts_and_alarms_on_a_shifted_stream(
        pipeline_run, tmp_path):
    _, cfg = pipeline_run
    log = tmp_path / "serve.log"
    validation, shifted = validation_texts(cfg), shifted_texts(cfg)
    with serving(cfg.paths.finetuned, "--drift-window", "60", "--drift-min", "30",
                 "--max-inputs", "64", log=log) as (port, _):
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/metadata").json()["drift"]["latest"] is None
        for _ in range(60 // len(validation)):
            assert httpx.post(f"{url}/predict", json={"inputs": validation}).status_code == 200
        calm = httpx.get(f"{url}/metadata").json()["drift"]
        while_calm = httpx.get(f"{url}/metrics").text
        repeats = -(-60 // len(shifted))
        assert httpx.post(f"{url}/predict",
                          json={"inputs": (shifted * repeats)[:60]}).status_code == 200
        alarmed = httpx.get(f"{url}/metadata").json()["drift"]
    assert calm["latest"]["window"] == 60 and not calm["alarm"]
    # The validation texts themselves: the same predictions and lengths as the reference.
    assert calm["latest"]["label_psi"] < 0.01 and calm["latest"]["length_psi"] < 0.01
    assert f'finetune_drift_psi{{signal="length"}} {calm["latest"]["length_psi"]}' in while_calm
    assert alarmed["alarm"] and alarmed["latest"]["length_psi"] > 1.0  # all at max_length
    assert "WARNING finetuning.inference.telemetry: drift: the last 60 predictions differ" \
        in log.read_text()


def test_predict_summarizes_the_run_as_the_service_watches_it(pipeline_run, tmp_path, caplog):
    _, cfg = pipeline_run
    texts = validation_texts(cfg) + shifted_texts(cfg) * 4  # two thirds shifted
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out, summary_file = tmp_path / "out.jsonl", tmp_path / "summary.json"
    with caplog.at_level(logging.INFO, logger="finetune"):
        assert cli.main(["predict", cfg.paths.finetuned, str(source), "-o", str(out),
                         "--summary", str(summary_file)]) == 0
    summary = json.loads(summary_file.read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    scored = Predictor(cfg.paths.finetuned).run(texts)
    assert summary["texts"] == len(texts) and summary["threshold"] == 0.25
    assert summary["labels"] == {label: sum(r["label"] == label for r in rows)
                                 for label in cfg.prepare.labels}
    assert summary["truncated"] == int(scored.truncated.sum()) > 0
    assert summary["length"]["max"] == cfg.tokenize.max_length
    assert summary["length"]["mean"] == pytest.approx(scored.lengths.mean(), abs=0.01)
    reference = read_reference(cfg.paths.finetuned)
    expected = summarize(cfg.prepare.labels, scored.logits.argmax(-1), scored.lengths,
                         scored.truncated, reference)
    assert summary["drift"] == pytest.approx(expected["drift"]) and \
        summary["drift"]["length_psi"] > 0.25
    (line,) = [r for r in caplog.records if r.getMessage().startswith("summary:")]
    assert line.levelno == logging.WARNING and "(OVER 0.25)" in line.getMessage()
