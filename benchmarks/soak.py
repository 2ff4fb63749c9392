"""A bounded load run of `finetune serve`: does it stay up, answer every request and keep
its memory flat under sustained concurrent traffic, and do its own /metrics agree?

One real server (`finetune serve MODEL --backend B`) on a free loopback port; after a
warm-up, `--clients` keep-alive clients post one text each per request for `--seconds`
while the server's resident memory is sampled every `--every` seconds. It prints
requests/s, latency, errors, RSS at the start and end of the measured span, and what the
server's /metrics counted.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.request
from pathlib import Path

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.serving import ROOT, bounded, load, save, serving


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def sample_rss(pid: int, every: float, stop: threading.Event, out: list[float]) -> None:
    """Append the server's RSS every `every` seconds until `stop` is set."""
    while not stop.wait(every):
        out.append(round(rss_mb(pid), 1))


def scraped(port: int) -> dict[str, float]:
    """/metrics totals by sample name, labels summed over (requests: /predict only)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("route", "/predict") != "/predict":
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def soak(args: argparse.Namespace) -> dict:
    """Warm up, then load the server for `args.seconds` while sampling its memory."""
    texts = pd.read_parquet(args.texts, columns=["text"])["text"].tolist()
    with serving(args.model, "--backend", args.backend, "--threads", str(args.threads)) as (
            port, process):
        load(port, texts, args.clients, min(5.0, args.seconds))  # warm-up: caches, arenas
        memory, stop = [round(rss_mb(process.pid), 1)], threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(process.pid, args.every, stop,
                                                            memory))
        sampler.start()
        before = scraped(port)
        result = load(port, texts, args.clients, args.seconds)
        stop.set()
        sampler.join()
        memory.append(round(rss_mb(process.pid), 1))
        counted = {key: scraped(port).get(key, 0.0) - before.get(key, 0.0)
                   for key in ("finetune_requests_total", "finetune_inputs_total")}
    return {"backend": args.backend, "clients": args.clients, "seconds": args.seconds,
            **result, "rss_mb": {"start": memory[0], "end": memory[-1], "max": max(memory),
                                 "samples": memory},
            "metrics_counted": counted}


def build_parser() -> argparse.ArgumentParser:
    """Command line of `python -m benchmarks.soak`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/finetuned")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8"))
    parser.add_argument("--texts", type=Path, default=ROOT / "data/prepared/test.parquet")
    parser.add_argument("--clients", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="(default: %(default)s)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between memory "
                        "samples (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print its figures as JSON, optionally save them."""
    args = bounded(build_parser().parse_args(argv))
    report = soak(args)
    print(json.dumps(report, indent=2))
    save(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
