"""The benchmark scripts: their pure helpers, and smoke runs so they cannot rot.

The smoke runs go through the real command lines in subprocesses: the GPU script on the
CPU with a tiny model, and Trainer-vs-ours on the tiny BERT with a tiny tokenized set.
"""
from __future__ import annotations

import json
import subprocess
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks import gpu_throughput as gpu
from benchmarks import trainer_vs_ours as bench
from finetuning.config import load_config
from finetuning.data.tokenization import tokenize_splits
from finetuning.data.truncation import Truncation
from finetuning.data.tokenizer import load_tokenizer
from finetuning.monitoring.events import load_events
from tests.conftest import ROOT, make_sentences, paths_under


def run_module(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m <module> args` from the repository root; show its output on failure."""
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{module} failed:\n{result.stdout}\n{result.stderr}"
    return result


# --- trainer_vs_ours helpers --------------------------------------------------------------

def test_rotated_order_gives_every_contender_each_position():
    names = ["a", "b", "c"]
    orders = [bench.rotated_order(names, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert bench.rotated_order(names, 3) == names


def test_train_subset_is_seeded_sorted_and_off_when_not_capping():
    rows = bench.train_subset(100, 10, seed=1)
    assert len(rows) == 10 and len(set(rows)) == 10 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, bench.train_subset(100, 10, seed=1))
    assert bench.train_subset(100, 0, seed=1) is None
    assert bench.train_subset(100, 100, seed=1) is None


def test_real_and_padded_tokens():
    lengths = np.array([3, 5, 2, 4])
    assert bench.real_tokens(lengths, epochs=2) == 28
    batches = [np.array([0, 1]), np.array([2, 3])]
    assert bench.padded_tokens(batches, lengths) == 2 * 5 + 2 * 4


def fake_run(contender: str, sps: float, rss: float, acc: float) -> dict:
    return {"contender": contender, "train_seconds": 100 / sps, "samples_per_second": sps,
            "tokens_per_second": 20 * sps, "peak_rss_mib": rss, "test_accuracy": acc,
            "padding_efficiency": 0.9, "load_average": 1.0, "torch_threads": 2,
            "cpu_share": 0.95, "mfu": sps / 1000}


def fake_runs() -> list[dict]:
    return [fake_run("ours", 100, 900, 0.824), fake_run("ours", 120, 950, 0.826),
            fake_run("ours", 90, 920, 0.820),
            fake_run("trainer-default", 60, 1000, 0.82), fake_run("trainer-default", 58, 990,
                                                                  0.82),
            fake_run("trainer-grouped", 110, 1010, 0.83)]


def test_summarize_takes_medians_and_spread():
    summary = bench.summarize(fake_runs())
    assert list(summary) == ["ours", "trainer-default", "trainer-grouped"]
    ours = summary["ours"]
    assert ours["samples_per_second"] == 100 and ours["peak_rss_mib"] == 920
    assert ours["test_accuracy"] == 0.824 and ours["runs"] == 3
    assert (ours["samples_per_second_min"], ours["samples_per_second_max"]) == (90, 120)
    assert summary["trainer-default"]["samples_per_second"] == 59


def test_compare_and_targets():
    ratios = bench.compare(bench.summarize(fake_runs()))
    assert ratios["trainer-default"]["samples_per_second"] == pytest.approx(100 / 59)
    assert ratios["trainer-grouped"]["peak_rss"] == pytest.approx(920 / 1010)
    assert ratios["trainer-grouped"]["test_accuracy_points"] == pytest.approx(-0.6)
    checks = {c["target"]: c["ok"] for c in bench.check_targets(ratios)}
    assert checks["samples/s ours/trainer-default >= 1.3"]
    assert not checks["samples/s ours/trainer-grouped >= 1.0"]
    assert not checks["test accuracy ours - trainer-grouped >= -0.5 points"]
    assert checks["peak RSS ours/trainer-grouped <= 1.0"]


def test_format_report_has_every_contender_ratio_and_target():
    runs = fake_runs()
    summary = bench.summarize(runs)
    ratios = bench.compare(summary)
    text = bench.format_report(summary, ratios, bench.check_targets(ratios),
                               {**bench.machine_info(runs), "matmul_peak_flops": 1.2e11})
    for needle in ("ours", "trainer-default", "trainer-grouped", "1.69x", "[MISS]", "[PASS]",
                   "load average", "100.0", " 10.0%", "peak, 120.0 GFLOP/s"):
        assert needle in text


def test_contender_list_is_checked():
    assert bench.parse_contenders("ours, trainer-grouped") == ["ours", "trainer-grouped"]
    with pytest.raises(Exception, match="unknown contender"):
        bench.parse_contenders("ours,keras")


# --- gpu_throughput helpers ---------------------------------------------------------------

@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0), ("NVIDIA A10G", 125.0),
    ("NVIDIA GH200 480GB", 989.0), ("Tesla T4", None)])
def test_peak_table_lookup(name, peak):
    assert gpu.peak_tflops(name) == peak


def test_step_flops_formula():
    # 6 N T + 12 L H sum(len^2): two rows of 4 and 2 tokens, N = 10, L = 2, H = 3.
    assert gpu.step_flops(10, 2, 3, np.array([4, 2])) == 6 * 10 * 6 + 12 * 2 * 3 * (16 + 4)


def test_matmul_parameters_leave_out_embedding_tables():
    model = torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.Linear(8, 2))
    assert gpu.matmul_parameters(model) == 8 * 2 + 2


def test_synthetic_split_lengths_in_range():
    split = gpu.synthetic_split(50, 64, 30522, seed=0)
    assert len(split) == 50 and split.lengths.min() >= 32 and split.lengths.max() <= 64
    assert split.tokens.max() < 30522


# --- smoke runs of the real command lines -------------------------------------------------

def positive_numbers(row: dict, keys) -> None:
    for key in keys:
        assert isinstance(row[key], (int, float)) and row[key] > 0, (key, row[key])


def test_gpu_throughput_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = run_module("benchmarks.gpu_throughput", "--device", "cpu", "--smoke",
                        "--peak-tflops", "1", "--json", str(out), timeout=120)
    assert "MFU" in result.stdout
    report = json.loads(out.read_text())
    assert report["peak_bf16_tflops"] == 1.0
    (row,) = report["results"]
    positive_numbers(row, ("samples_per_second", "tokens_per_second",
                           "model_tflops_per_second", "mfu", "mfu_padded", "final_loss"))
    assert row["mfu"] <= row["mfu_padded"]  # padding only adds computed FLOPs


@pytest.fixture
def tiny_benchmark_params(tmp_path, tiny_model) -> Path:
    """params.yaml pointing at the tiny model and a tokenized 60-row synthetic set."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    frame = make_sentences(60, seed=3)
    frame["label"] = (frame["label"] == "positive").astype("int64")
    for name, rows in (("train", frame[:40]), ("validation", frame[40:50]),
                       ("test", frame[50:])):
        rows.reset_index(drop=True).to_parquet(prepared / f"{name}.parquet")
    tokenized = tmp_path / "tokenized"
    splits = tokenize_splits(prepared, load_tokenizer(tiny_model), Truncation(16))
    splits.save_to_disk(str(tokenized))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"] = paths_under(tmp_path)  # inside the params file's folder, as required
    params["paths"].update(base_model=str(shutil.copytree(tiny_model, tmp_path / "model")),
                           prepared=str(prepared), tokenized=str(tokenized))
    params["tokenize"]["max_length"] = 16
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_trainer_vs_ours_smoke_on_tiny_model(tmp_path, tiny_benchmark_params):
    out = tmp_path / "bench.json"
    result = run_module("benchmarks.trainer_vs_ours", "--params", str(tiny_benchmark_params),
                        "--repeats", "1", "--epochs", "1", "--batch-size", "8",
                        "--threads", "1", "--json", str(out))
    assert "ours / ..." in result.stdout
    report = json.loads(out.read_text())
    assert sorted(run["contender"] for run in report["runs"]) == sorted(bench.DEFAULT_CONTENDERS)
    for run in report["runs"]:
        positive_numbers(run, ("train_seconds", "samples_per_second", "tokens_per_second",
                               "peak_rss_mib", "padding_efficiency"))
        assert run["samples"] == 40 and 0 <= run["test_accuracy"] <= 1
        assert run["padding_efficiency"] <= 1 and run["torch_threads"] == 1
        assert 0 < run["mfu"] < 1
    assert set(report["ratios"]) == {"trainer-default", "trainer-grouped"}
    positive_numbers(report["ratios"]["trainer-grouped"], ("samples_per_second", "peak_rss"))


def test_logging_overhead_compares_full_logging_with_none(tmp_path, tiny_benchmark_params):
    """The two timed runs differ in logging only: 'on' writes every group at its
    interval; 'off' writes no histograms, images or PR curves, and scalars only at the
    epoch's end (the last step's train scalars and the validation pass)."""
    from dataclasses import replace

    from benchmarks.logging_overhead import timed_run

    cfg = load_config(tiny_benchmark_params)
    cfg = replace(cfg, train=replace(cfg.train, epochs=1, batch_size=8, threads=1),
                  tensorboard=replace(cfg.tensorboard, log_every=1, histogram_every=2))
    events = {}
    for logging_on in (True, False):
        workdir = tmp_path / ("on" if logging_on else "off")
        fit, total = timed_run(cfg, workdir, logging_on)
        assert 0 < fit <= total
        events[logging_on] = load_events(workdir / "tb")
    on, off = (events[flag].Tags() for flag in (True, False))
    assert on["histograms"] and on["images"] and "pr/positive" in on["tensors"]
    assert not (off["histograms"] or off["images"]) and off["tensors"] == ["config/text_summary"]
    steps = {flag: [e.step for e in events[flag].Scalars("train/loss")] for flag in events}
    assert steps[True] == [1, 2, 3, 4, 5]  # 40 rows / batch 8, logged every step
    assert steps[False] == [5]             # once, at the epoch's end


def test_logging_overhead_cli_prints_the_ratio(tiny_benchmark_params):
    result = run_module("benchmarks.logging_overhead", "--params", str(tiny_benchmark_params),
                        "--repeats", "1", timeout=180)
    ratio = float(result.stdout.split("ratio on/off ")[1].split()[0])
    assert ratio > 0


# --- serving -------------------------------------------------------------------------------

def test_serving_benchmark_smoke_on_the_tiny_model(pipeline_run, tmp_path):
    """Two clients for a second against each server, and the pipeline() loop."""
    from benchmarks import serving

    _, cfg = pipeline_run
    out = tmp_path / "serving.json"
    result = run_module("benchmarks.serving", "--model", cfg.paths.finetuned, "--onnx",
                        cfg.paths.onnx, "--texts", f"{cfg.paths.prepared}/test.parquet",
                        "--backends", "onnx-int8", "--clients", "2", "--seconds", "1",
                        "--threads", "1", "--json", str(out))
    assert "| pipeline() loop, one text per call |" in result.stdout
    report = json.loads(out.read_text())
    assert len(report["results"]) == 3  # pipeline, unbatched torch, onnx-int8
    for row in report["results"].values():
        assert row["requests"] > 0 and row["errors"] == 0 and row["p50_ms"] <= row["p95_ms"]
    assert serving.figures([0.001, 0.003], 1.0, [])["requests_per_second"] == 2.0


def test_soak_counts_what_the_server_counted_and_samples_its_memory(pipeline_run, tmp_path):
    """Two clients for two seconds; the server's /metrics agree with the clients."""
    _, cfg = pipeline_run
    out = tmp_path / "soak.json"
    run_module("benchmarks.soak", "--model", cfg.paths.finetuned, "--texts",
               f"{cfg.paths.prepared}/test.parquet", "--clients", "2", "--seconds", "2",
               "--every", "0.5", "--threads", "1", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["requests"] > 0 and report["errors"] == 0
    assert report["metrics_counted"] == {"finetune_requests_total": report["requests"],
                                         "finetune_inputs_total": report["requests"]}
    memory = report["rss_mb"]
    assert len(memory["samples"]) >= 4 and 50 < memory["start"] <= memory["max"]


def test_lora_vs_full_smoke_on_tiny_model(tmp_path, tiny_benchmark_params):
    """One LoRA run through the CLI (a full run is the same code path with method full)."""
    out = tmp_path / "lora.json"
    result = run_module("benchmarks.lora_vs_full", "--params", str(tiny_benchmark_params),
                        "--seeds", "1", "--epochs", "1", "--methods", "lora", "--json",
                        str(out), "--lora-learning-rates", "2e-3", timeout=300)
    assert "fp32 matmul peak" in result.stdout
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    lora = report["medians"]["lora"]
    assert run["method"] == "lora" and lora["trainable_parameters"] < run["num_parameters"]
    assert run["learning_rate"] == 2e-3 and 0 <= lora["validation_accuracy"] <= 1
    assert 0 < lora["adapter_mb"] < 2 and lora["samples_per_second"] > 0
    assert lora["peak_rss_mib"] > 100 and 0 <= lora["test_accuracy"] <= 1
    assert 0 < lora["mfu"] < 1 and report["matmul_peak_flops"] > 1e8


def test_lora_vs_full_mfu_and_medians():
    from benchmarks.lora_vs_full import mfu, summarize

    # full: 6 N per token; LoRA: 4 N + 2 N_trainable
    assert mfu({"trainable_parameters": 10, "tokens_per_second": 2.0}, 10, 120.0) == 1.0
    assert mfu({"trainable_parameters": 1, "tokens_per_second": 3.0}, 10, 126.0) == 1.0
    runs = [{"method": "full", "trainable_parameters": 5, "samples_per_second": s,
             "peak_rss_mib": 1.0, "validation_accuracy": 0.6, "test_accuracy": 0.5,
             "adapter_mb": None, "mfu": 0.1, "learning_rate": 1e-4}
            for s in (1.0, 3.0, 2.0)]
    assert summarize(runs, False) == {"full": {
        "trainable_parameters": 5, "samples_per_second": 2.0, "peak_rss_mib": 1.0,
        "validation_accuracy": 0.6, "test_accuracy": 0.5, "adapter_mb": None, "mfu": 0.1}}
    lora = [{**run, "method": "lora", "learning_rate": rate, "validation_accuracy": acc}
            for run, rate, acc in zip(runs, (1e-3, 2e-3, 1e-3), (0.7, 0.8, 0.9))]
    rows = summarize(runs + lora, True)
    assert sorted(rows) == ["full", "lora@0.001", "lora@0.002"]
    assert rows["lora@0.001"]["validation_accuracy"] == 0.8  # the median of 0.7 and 0.9


def test_pretraining_benchmark_spreads_seeds_and_pairs_the_gain_per_seed(capsys):
    from benchmarks.pretraining import report, seeded

    def row(test, validation, baseline=0.85):
        return {"test_accuracy": test, "validation_accuracy": validation,
                "baseline_test_accuracy": baseline}

    rows = {"zh-scratch": row(0.84, 0.85), "zh-scratch-seed1": row(0.86, 0.83),
            "zh-nopretrain": row(0.83, 0.82), "zh-nopretrain-seed1": row(0.82, 0.80),
            "HEAD": row(0.5, 0.5)}
    assert seeded("zh-scratch", None) == "zh-scratch" and seeded("a", 7) == "a-seed7"
    summary = report(rows, ["zh-scratch", "zh-nopretrain"], [1])
    ours = summary["arms"]["zh-scratch"]
    assert ours["runs"] == 2 and ours["test_accuracy"] == [0.84, 0.86]
    assert ours["test_accuracy_mean"] == pytest.approx(0.85)
    assert ours["test_accuracy_std"] == pytest.approx(0.02 / 2 ** 0.5)
    gain = summary["zh_gain_points"]  # paired by seed: 0.84 - 0.83, 0.86 - 0.82
    assert gain["over_no_pretraining"] == pytest.approx([1.0, 4.0])
    assert gain["over_no_pretraining_mean"] == pytest.approx(2.5)
    assert gain["over_baseline"] == pytest.approx([-1.0, 1.0])
    assert "+1.00, +4.00 points over none (mean +2.50)" in capsys.readouterr().out
    single = report({"zh-scratch": row(0.84, 0.85)}, ["zh-scratch"], [])
    assert single["arms"]["zh-scratch"]["test_accuracy_std"] == 0.0
    assert "zh_gain_points" not in single
