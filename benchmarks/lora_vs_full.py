"""Full fine-tuning against LoRA on the pipeline's data and model, on this machine.

    python -m benchmarks.lora_vs_full --seeds 42 43 44 \
        --json benchmarks/results/lora_vs_full-2cpu.json

Each run is the train stage itself (`python -m stages.train`) in its own process, with a
params file of its own (params.yaml with `train.method`, `train.seed` and the outputs
moved to a temporary folder; no checkpoints), so its peak RSS (from `os.wait4`) is that
run's alone. Then the same code scores every run's model on the test split. Per method,
medians over the seeds: trainable parameters, samples/s, peak RSS, test accuracy, adapter
size, and model FLOPs utilisation (benchmarks/flops.py: matmul FLOPs per real token
times real tokens/s, over this machine's fp32 matmul peak, a timed 2048 x 2048
`torch.mm` in the same run).
Needs `dvc repro tokenize` (data/tokenized, models/base).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from benchmarks.flops import linear_weights, matmul_peak, mfu

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("full", "lora")


def train_once(params: dict, method: str, seed: int, epochs: int | None, work: Path,
               lora_rate: float | None = None) -> dict:
    """One train-stage process; its figures, peak RSS and the folder it wrote."""
    run = {**params, "paths": {**params["paths"], **{key: str(work / key) for key in (
        "trained", "tensorboard", "checkpoints")}, "train_metrics": str(work / "train.json"),
        "train_run": str(work / "train_run.json")}}
    run["train"] = {**params["train"], "method": method, "seed": seed, "checkpoint_every": 0,
                    **({"epochs": epochs} if epochs else {})}
    if lora_rate is not None:
        run["train"]["lora"] = {**params["train"]["lora"], "learning_rate": lora_rate}
    # beside `work`, in the project folder: a params file's paths must lie inside its folder
    run_params = work.with_suffix(".yaml")
    run_params.write_text(yaml.safe_dump(run, sort_keys=False))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "stages.train", "--params",
                                 str(run_params)], cwd=ROOT, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        run_params.unlink()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{method} seed {seed}: train exited with {proc.returncode}")
    figures = {**json.loads((work / "train_run.json").read_text()),
               **json.loads((work / "train.json").read_text())}
    return {"method": method, "seed": seed, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "learning_rate": run["train"]["lora"]["learning_rate"] if method == "lora"
            else run["train"]["learning_rate"],
            "validation_accuracy": figures.get("selected_validation_accuracy"),
            **{k: figures.get(k) for k in ("samples_per_second", "tokens_per_second",
                                           "trainable_parameters", "num_parameters",
                                           "adapter_mb", "train_seconds")}}


def test_accuracy(folder: Path, tokenized: str) -> float:
    """Accuracy of the model in `folder` on the tokenized test split."""
    from finetuning.data.batching import load_splits
    from finetuning.data.tokenizer import load_tokenizer
    from finetuning.inference.model import load_classifier, score_splits

    test = load_splits(tokenized, skip=("train", "validation"))["test"]
    scored = score_splits(load_classifier(folder), {"test": test}, 128,
                          load_tokenizer(folder).pad_token_id, torch.device("cpu"))
    return scored["test"][1]["accuracy"]


def variant(run: dict, several_rates: bool) -> str:
    """A run's row name: its method, and its LoRA learning rate when several were run."""
    return f"lora@{run['learning_rate']:g}" if run["method"] == "lora" and several_rates \
        else run["method"]


def summarize(runs: list[dict], several_rates: bool) -> dict[str, dict]:
    """Per method (and LoRA learning rate), the median of every figure over its runs."""
    keys = ("trainable_parameters", "samples_per_second", "peak_rss_mib",
            "validation_accuracy", "test_accuracy", "adapter_mb", "mfu")
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(variant(run, several_rates), []).append(run)
    return {name: {k: statistics.median(r[k] for r in group)
                   if all(r[k] is not None for r in group) else None for k in keys}
            for name, group in groups.items()}


def main(argv: list[str] | None = None) -> int:
    """Train every (method, seed), score, print and optionally write the medians."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lora_vs_full",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="(default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epochs", type=int, help="instead of train.epochs")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--lora-learning-rates", type=float, nargs="+", metavar="LR",
                        help="one LoRA run per rate (default: train.lora.learning_rate); "
                        "choose by the medians' validation_accuracy, never test_accuracy")
    parser.add_argument("--json", type=Path, help="write runs and medians here")
    args = parser.parse_args(argv)
    params = yaml.safe_load(Path(args.params).read_text())
    project = Path(args.params).resolve().parent  # the runs' outputs go inside it
    peak = matmul_peak()
    weights = linear_weights(params["paths"]["base_model"], params["prepare"]["labels"])
    rates = args.lora_learning_rates or [None]
    jobs = [(method, rate) for method in args.methods
            for rate in (rates if method == "lora" else [None])]
    runs = []
    for seed in args.seeds:
        for method, rate in jobs if seed % 2 == 0 else jobs[::-1]:  # alternate the order
            with tempfile.TemporaryDirectory(dir=project, prefix=".lora_vs_full-") as tmp:
                run = train_once(params, method, seed, args.epochs, Path(tmp), rate)
                run["test_accuracy"] = test_accuracy(Path(tmp) / "trained",
                                                     params["paths"]["tokenized"])
            run["mfu"] = mfu(run, weights, peak)
            runs.append(run)
            print(json.dumps(run), flush=True)
    medians = summarize(runs, len(rates) > 1)
    print(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; medians over seeds {args.seeds}:")
    for method, row in medians.items():
        print(f"  {method}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps({"matmul_peak_flops": peak, "linear_weights": weights,
                                         "runs": runs, "medians": medians}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
