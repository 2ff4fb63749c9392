"""What a deployment buys, measured on one machine in one run: test accuracy, batch-1
latency and batch-32 throughput, file size, and how far logits drift from torch fp32."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from finetuning.inference.backends import ONNX_FILES
from finetuning.inference.predictor import Predictor

BATCH = 32  # the batch of the throughput figure, `samples_per_second_b32`


def latency_ms(predictor: Predictor, text: str, runs: int, warmup: int,
               pair: str | None = None) -> tuple[float, float]:
    """p50 and p95 milliseconds of predicting one text (or pair), after `warmup` untimed
    runs."""
    pairs = None if pair is None else [pair]
    for _ in range(warmup):
        predictor.logits([text], pairs=pairs)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        predictor.logits([text], pairs=pairs)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.percentile(times, 50)), 1000 * float(np.percentile(times, 95))


def typical_row(predictor: Predictor, texts: list[str], pairs: list[str] | None) -> int:
    """The row of median token length."""
    lengths = predictor.encode(texts, pairs)[0].lengths
    return int(np.argsort(lengths, kind="stable")[len(lengths) // 2])


def measure(predictor: Predictor, texts: list[str], labels: np.ndarray, files: list[Path],
            runs: int, warmup: int, pairs: list[str] | None = None) -> tuple[dict, np.ndarray]:
    """Figures of one backend on a labelled split, and its logits (for the drift check).

    Throughput times one pass over every text in length-sorted batches of 32,
    tokenization included, after one untimed batch.
    """
    predictor.batch_size = BATCH
    predictor.logits(texts[:BATCH], pairs=None if pairs is None else pairs[:BATCH])
    started = time.perf_counter()
    logits = predictor.logits(texts, pairs=pairs)
    seconds = time.perf_counter() - started
    row = typical_row(predictor, texts, pairs)
    p50, p95 = latency_ms(predictor, texts[row], runs, warmup,
                          None if pairs is None else pairs[row])
    return {"accuracy": float((logits.argmax(-1) == labels).mean()),
            "latency_ms_b1": round(p50, 3), "latency_ms_b1_p95": round(p95, 3),
            "samples_per_second_b32": round(len(texts) / seconds, 1),
            "size_mb": round(sum(f.stat().st_size for f in files) / 2**20, 2)}, logits


def measure_backends(finetuned: Path, exported: Path, texts: list[str], labels: np.ndarray,
                     runs: int, warmup: int, threads: int,
                     pairs: list[str] | None = None) -> dict[str, dict]:
    """torch fp32 on the HF folder, onnx fp32 and int8 on the export, one after another on
    the same texts and threads; the ONNX entries add `max_abs_logit_diff` against torch."""
    contenders = (("torch_fp32", finetuned, "torch", sorted(finetuned.glob("*.safetensors"))),
                  ("onnx_fp32", exported, "onnx", [exported / ONNX_FILES["onnx"]]),
                  ("onnx_int8", exported, "onnx-int8", [exported / ONNX_FILES["onnx-int8"]]))
    results, reference = {}, None
    for key, folder, backend, files in contenders:
        predictor = Predictor(folder, backend, BATCH, threads)
        figures, logits = measure(predictor, texts, labels, files, runs, warmup, pairs)
        if reference is None:
            reference = logits
        else:
            figures["max_abs_logit_diff"] = float(np.abs(logits - reference).max())
        results[key] = figures
    return results
