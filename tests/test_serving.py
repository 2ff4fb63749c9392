"""`finetune serve`: the real server as a subprocess on a free loopback port, real HTTP
requests against it (Hugging Face's format and its own client, limits, malformed bodies,
concurrency), and a clean stop on SIGTERM. The model is the session's tiny fine-tuned one."""
from __future__ import annotations

import json
import math
import os
import signal
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.serving import serving
from finetuning.inference.predictor import Predictor

TEXTS = ["the movie was great", "awful plot and bad acting", "lovely", "the film was boring"]


@pytest.fixture(scope="module")
def server(pipeline_run, tmp_path_factory):
    """One torch server for the module (batches wait up to 50 ms for company)."""
    _, cfg = pipeline_run
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(cfg.paths.finetuned, "--max-inputs", "8", "--max-chars", "200",
                 "--max-wait-ms", "50", "--metrics", cfg.paths.eval_metrics,
                 log=log) as (port, _):
        yield f"http://127.0.0.1:{port}", cfg


def post(url: str, body) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(f"{url}/predict", content=content, timeout=30,
                      headers={"Content-Type": "application/json"})


def test_answers_in_hugging_face_format_sorted_and_equal_to_predict(server):
    url, cfg = server
    single = post(url, {"inputs": TEXTS[0]})
    assert single.status_code == 200
    (scores,) = single.json()
    assert {s["label"] for s in scores} == set(cfg.prepare.labels)
    assert scores[0]["score"] >= scores[1]["score"] and math.isclose(
        sum(s["score"] for s in scores), 1.0, rel_tol=1e-6)
    many = post(url, {"inputs": TEXTS}).json()
    expected = Predictor(cfg.paths.finetuned).predict(TEXTS)
    assert [rows[0]["label"] for rows in many] == [p["label"] for p in expected]
    assert [rows[0]["score"] for rows in many] == pytest.approx(
        [p["score"] for p in expected], abs=1e-6)


def test_top_k_and_function_to_apply(server):
    url, _ = server
    top = post(url, {"inputs": TEXTS[:2], "parameters": {"top_k": 1}}).json()
    assert [len(rows) for rows in top] == [1, 1]
    raw = post(url, {"inputs": TEXTS[0], "parameters": {"function_to_apply": "none"}}).json()
    sigmoid = post(url, {"inputs": TEXTS[0],
                         "parameters": {"function_to_apply": "sigmoid"}}).json()
    logits = {s["label"]: s["score"] for s in raw[0]}
    for entry in sigmoid[0]:
        assert entry["score"] == pytest.approx(1 / (1 + math.exp(-logits[entry["label"]])))


@pytest.mark.parametrize("body, limit", [
    ({"inputs": ["a"] * 9}, "max_inputs"),
    ({"inputs": "x" * 201}, "max_chars"),
    ({"inputs": ["ok", "y" * 500]}, "max_chars"),
])
def test_over_a_limit_is_413_naming_it(server, body, limit):
    response = post(server[0], body)
    assert response.status_code == 413
    assert response.json()["limit"] == limit and limit in response.json()["error"]


@pytest.mark.parametrize("body", [
    "{not json", "", '{"inputs": 5}', '{"inputs": [1, 2]}', '{"text": "hi"}',
    '{"inputs": "hi", "parameters": {"top_k": 0}}',
    '{"inputs": "hi", "parameters": {"function_to_apply": "relu"}}',
    '{"inputs": "hi", "parameters": {"temperature": 2}}', '[]', 'null',
])
def test_malformed_requests_are_422_and_the_server_stays_up(server, body):
    response = post(server[0], body)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    assert httpx.get(f"{server[0]}/health").status_code == 200


def test_a_huge_body_is_refused_before_it_is_parsed(server):
    response = post(server[0], b'{"inputs": "' + b"z" * 3_000_000 + b'"}')
    assert response.status_code == 413 and response.json()["limit"] == "max_body_bytes"


def test_concurrent_requests_share_batches(server):
    url, cfg = server
    before = httpx.get(f"{url}/health").json()["batches"]
    results: dict[int, list] = {}

    def ask(i: int) -> None:
        results[i] = post(url, {"inputs": TEXTS[i % len(TEXTS)]}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batches = httpx.get(f"{url}/health").json()["batches"] - before
    assert len(results) == 24 and batches < 24  # fewer forward passes than requests
    expected = post(url, {"inputs": TEXTS}).json()
    for i, rows in results.items():
        assert rows[0][0]["label"] == expected[i % len(TEXTS)][0]["label"]
        assert rows[0][0]["score"] == pytest.approx(expected[i % len(TEXTS)][0]["score"],
                                                    abs=1e-5)


def test_hugging_face_inference_client_works_unchanged(server):
    from huggingface_hub import InferenceClient

    url, cfg = server
    result = InferenceClient(model=f"{url}/predict").text_classification(TEXTS[0], top_k=2)
    assert [r.label for r in result] == [r["label"] for r in post(url, {"inputs": TEXTS[0]})
                                         .json()[0]]
    assert all(0 <= r.score <= 1 for r in result)


def test_health_metadata_and_docs(server):
    url, cfg = server
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    meta = httpx.get(f"{url}/metadata").json()
    assert meta["labels"] == cfg.prepare.labels and meta["backend"] == "torch"
    assert meta["max_length"] == cfg.tokenize.max_length and meta["truncation"] == "head"
    assert meta["text_pair"] is False
    assert meta["metrics"] == json.loads(open(cfg.paths.eval_metrics).read())
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]


def scrape(url: str) -> dict[tuple, float]:
    """/metrics read by Prometheus' own parser: {(sample name, labels...): value}."""
    response = httpx.get(f"{url}/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def test_metrics_count_requests_batches_inputs_truncation_and_labels(server):
    url, cfg = server
    texts = [*TEXTS, " ".join(["plot"] * 40)]  # the last one is cut at max_length
    before = scrape(url)
    assert post(url, {"inputs": texts[:2]}).status_code == 200
    assert post(url, {"inputs": texts[2:]}).status_code == 200
    assert post(url, {"inputs": ["a"] * 9}).status_code == 413
    assert httpx.get(f"{url}/nowhere").status_code == 404
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        key = (name, *sorted(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("finetune_requests_total", route="/predict", status="200") == 2
    assert delta("finetune_requests_total", route="/predict", status="413") == 1
    assert delta("finetune_requests_total", route="other", status="404") == 1
    assert delta("finetune_request_seconds_count", route="/predict", status="200") == 2
    assert delta("finetune_request_seconds_sum", route="/predict", status="200") > 0
    assert delta("finetune_queue_wait_seconds_count") == 2  # the 413 never queued
    assert delta("finetune_batch_size_sum") == len(texts)
    assert 1 <= delta("finetune_batch_size_count") <= 2
    assert delta("finetune_inputs_total") == len(texts)
    scored = Predictor(cfg.paths.finetuned).run(texts)
    assert delta("finetune_inputs_truncated_total") == scored.truncated.sum() == 1
    predicted = [cfg.prepare.labels[i] for i in scored.logits.argmax(-1)]
    for label in cfg.prepare.labels:
        assert delta("finetune_predictions_total", label=label) == predicted.count(label)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_onnx_int8_serves_and_stops_cleanly(pipeline_run, tmp_path, stop):
    _, cfg = pipeline_run
    log = tmp_path / "serve.log"
    with serving(cfg.paths.onnx, "--backend", "onnx-int8", log=log) as (port, process):
        url = f"http://127.0.0.1:{port}"
        rows = post(url, {"inputs": TEXTS}).json()
        assert [len(r) for r in rows] == [2] * len(TEXTS)
        assert httpx.get(f"{url}/metadata").json()["backend"] == "onnx-int8"
        os.killpg(process.pid, stop)
        assert process.wait(timeout=20) == 0
    text = log.read_text()
    assert "Shutting down" in text and "Finished server process" in text


def test_binds_loopback_by_default():
    from finetuning.cli import build_parser

    args = build_parser().parse_args(["serve", "models/finetuned"])
    assert args.host == "127.0.0.1" and args.port == 8000
