"""Requests/s and latency of `finetune serve` under concurrent clients, per backend, against
a plain one-at-a-time loop over `transformers.pipeline` on the same texts.

Each server is the real command (`finetune serve MODEL --backend B`) in its own process on
a free loopback port; `--clients` threads, each with its own keep-alive connection, post
one text per request ({"inputs": text}) in turn for `--seconds`, and every request's
latency is kept. The pipeline loop runs in this process, one text per call, with the
same truncation. Loopback only; clients and time are bounded.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "onnx", "onnx-int8")
FINETUNE = Path(sys.executable).parent / "finetune"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(port: int, process: subprocess.Popen, timeout: float) -> None:
    """Poll GET /health until 200; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"finetune serve exited with {process.returncode} on start")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"finetune serve not healthy within {timeout} s")
        time.sleep(0.2)


@contextlib.contextmanager
def serving(model: str | Path, *args: str, log: Path | None = None,
            timeout: float = 120) -> Iterator[tuple[int, subprocess.Popen]]:
    """`finetune serve MODEL ARGS` on a free loopback port until the block ends; yields
    (port, process). Stopped with SIGTERM to its process group, killed if it lingers."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    process = subprocess.Popen([str(FINETUNE), "serve", str(model), "--host", "127.0.0.1",
                                "--port", str(port), *args], stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(port, process, timeout)
        yield port, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log:
            out.close()


def client(port: int, texts: list[str], start: int, until: float, latencies: list[float],
           errors: list[int]) -> None:
    """Post one text per request until `until`; record each request's seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    index = start
    while time.perf_counter() < until:
        body = json.dumps({"inputs": texts[index % len(texts)]})
        began = time.perf_counter()
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - began)
        if response.status != 200:
            errors.append(response.status)
        index += 1
    connection.close()


def load(port: int, texts: list[str], clients: int, seconds: float) -> dict:
    """`clients` concurrent clients for `seconds`: requests/s, p50/p95 ms, errors."""
    latencies: list[float] = []
    errors: list[int] = []
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=client, args=(port, texts, i * 7919, until, latencies,
                                                     errors)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return figures(latencies, time.perf_counter() - started, errors)


def figures(latencies: list[float], seconds: float, errors: list) -> dict:
    """Requests/s and latency percentiles of one measured span."""
    ms = 1000 * np.asarray(latencies)
    return {"requests": len(latencies), "errors": len(errors),
            "requests_per_second": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def pipeline_loop(model: Path, texts: list[str], seconds: float) -> dict:
    """One text per `pipeline()` call, in a loop, for `seconds`."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(model), device=-1)
    classify(texts[0], truncation=True)  # warm-up
    latencies, until, index = [], time.perf_counter() + seconds, 0
    started = time.perf_counter()
    while time.perf_counter() < until:
        began = time.perf_counter()
        classify(texts[index % len(texts)], truncation=True)
        latencies.append(time.perf_counter() - began)
        index += 1
    return figures(latencies, time.perf_counter() - started, [])


def contenders(args: argparse.Namespace) -> list[tuple[str, Path, list[str]]]:
    """(name, model folder, serve options) of every server to measure."""
    common = ["--max-wait-ms", str(args.max_wait_ms), "--threads", str(args.threads)]
    out = [("serve torch, one request per pass", args.model,
            ["--backend", "torch", "--max-batch-size", "1", *common])]
    for backend in args.backends:
        model = args.model if backend == "torch" else args.onnx
        out.append((f"serve {backend}, micro-batched", model,
                    ["--backend", backend, "--max-batch-size", str(args.max_batch), *common]))
    return out


def benchmark(args: argparse.Namespace) -> dict:
    """Every contender on the same texts; ratios against the pipeline() loop."""
    import pandas as pd
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = pd.read_parquet(args.texts, columns=["text"])["text"].tolist()
    results = {"pipeline() loop, one text per call": pipeline_loop(args.model, texts,
                                                                    args.seconds)}
    for name, model, options in contenders(args):
        with serving(model, *options) as (port, _):
            load(port, texts, min(2, args.clients), min(2.0, args.seconds))  # warm-up
            results[name] = load(port, texts, args.clients, args.seconds)
        print(f"{name}: {results[name]}", file=sys.stderr)
    base = results["pipeline() loop, one text per call"]["requests_per_second"]
    return {"clients": args.clients, "seconds": args.seconds, "texts": len(texts),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "results": results,
            "requests_per_second_vs_pipeline": {
                name: round(row["requests_per_second"] / base, 2) for name, row in results.items()}}


def format_report(report: dict) -> str:
    """A Markdown table of the results."""
    lines = [f"{report['clients']} concurrent clients, {report['seconds']} s each, "
             f"{report['torch_threads']} torch threads, {report['cpu_count']} CPUs",
             "", "| contender | requests/s | vs pipeline() | p50 ms | p95 ms | errors |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in report["results"].items():
        lines.append(f"| {name} | {row['requests_per_second']} | "
                     f"{report['requests_per_second_vs_pipeline'][name]}x | {row['p50_ms']} | "
                     f"{row['p95_ms']} | {row['errors']} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Command line of `python -m benchmarks.serving`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/finetuned")
    parser.add_argument("--onnx", type=Path, default=ROOT / "models/onnx")
    parser.add_argument("--texts", type=Path, default=ROOT / "data/prepared/test.parquet")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--clients", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per contender "
                        "(default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch/onnxruntime threads; "
                        "0 = torch's default (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally save JSON."""
    args = bounded(build_parser().parse_args(argv))
    report = benchmark(args)
    print(format_report(report))
    save(report, args.json)
    return 0


def bounded(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments of a load run, refused unless clients and time are bounded."""
    if not 1 <= args.clients <= 64 or not 0 < args.seconds <= 600:
        raise SystemExit("--clients must be in [1, 64] and --seconds in (0, 600]")
    return args


def save(report: dict, path: Path | None) -> None:
    """Write a report as JSON when a path was given."""
    if path:
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
