"""Training throughput and model FLOPs utilisation (MFU) of a bert-base classifier on one
GPU, through the train stage's own step (finetuning.training.loop.train_step: bf16 autocast,
gradient clipping, fused AdamW with its weight-decay groups, a linear schedule) on
batches collated by finetuning.data.batching (padded per batch to a multiple of 8, pinned host
memory, non-blocking copies), with TF32 matmuls on.

The model is `BertConfig()` (bert-base: 12 layers, hidden 768) with random weights and a
2-label head, so nothing is downloaded. Rows are random token ids with lengths drawn
uniformly from [seq/2, seq], grouped by length as in training. For each sequence length
the script runs a few warm-up steps, then times `--steps` full optimizer steps.

Model FLOPs per optimizer step (forward + backward = 3 x forward), summed over the rows
of the batch, counting real (unpadded) tokens only, so padding is waste, not work:

    6 * N * tokens  +  12 * layers * hidden * sum(length_i ** 2)

N = parameters that take part in matmuls (all but the embedding tables, which are
lookups); the second term is attention's QK^T and AV (2 * 2 * length^2 * hidden per
layer forward). MFU = achieved model FLOP/s / the device's peak dense bf16 tensor FLOP/s
(datasheet figures below, or --peak-tflops). `mfu_padded` counts the padded widths
instead: the gap between the two is what padding costs.

    python -m benchmarks.gpu_throughput                       # cuda, seq 128 and 512
    python -m benchmarks.gpu_throughput --device cpu --smoke  # seconds; what tests run
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from finetuning.config import Train
from finetuning.data.batching import (CUDA_PAD_MULTIPLE, TokenizedSplit, iterate_batches,
                                      length_grouped_batches)
from finetuning.training.loop import Optim, train_step
from finetuning.training.runtime import Runtime, autocast, grad_scaler, use_tf32
from finetuning.training.schedule import build_optimizer, build_scheduler

log = logging.getLogger("benchmarks.gpu_throughput")

# Peak dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, matched
# against torch.cuda.get_device_name() in this order (more specific names first).
PEAK_BF16_TFLOPS = (
    (r"B200", 2250.0),
    (r"H200 NVL", 835.0),
    (r"H200|GH200", 989.0),
    (r"H100 NVL", 835.0),
    (r"H100 PCIe", 756.0),
    (r"H100|H800", 989.0),       # SXM / HBM3 variants
    (r"A100|A800", 312.0),       # SXM and PCIe alike
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"\bA10G?\b", 125.0),       # A10 datasheet; AWS's A10G is clocked a little lower
)
SMOKE = {"layers": 2, "hidden": 64, "heads": 2, "seq_lengths": [32], "batch_tokens": 128,
         "steps": 2, "warmup_steps": 1}


def peak_tflops(device_name: str) -> float | None:
    """Datasheet peak dense bf16 TFLOP/s of a GPU by name, None when unknown."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return tflops
    return None


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters used in matmuls: everything but the embedding tables."""
    embeddings = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)
                     for p in m.parameters(recurse=False))
    return sum(p.numel() for p in model.parameters()) - embeddings


def step_flops(params: int, layers: int, hidden: int, lengths: np.ndarray) -> float:
    """Model FLOPs of one training step (forward + backward) over rows of these lengths."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return 6.0 * params * lengths.sum() + 12.0 * layers * hidden * float((lengths ** 2).sum())


def synthetic_split(rows: int, seq: int, vocab: int, seed: int) -> TokenizedSplit:
    """Random token ids, lengths uniform in [seq/2, seq], random binary labels."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(2, seq // 2), seq + 1, size=rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.integers(1000, vocab, size=int(offsets[-1]), dtype=np.int32)
    return TokenizedSplit(tokens, offsets, rng.integers(0, 2, size=rows).astype(np.int64))


def build_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """bert-base (or the smoke size) with random weights and a 2-label head."""
    from transformers import BertConfig, BertForSequenceClassification

    sizes = {}
    if args.smoke:
        sizes = {"num_hidden_layers": SMOKE["layers"], "hidden_size": SMOKE["hidden"],
                 "num_attention_heads": SMOKE["heads"], "intermediate_size": 4 * SMOKE["hidden"]}
    config = BertConfig(num_labels=2, attn_implementation="sdpa", **sizes)
    return BertForSequenceClassification(config).to(device).train()


def measure(model: torch.nn.Module, args: argparse.Namespace, seq: int,
            device: torch.device) -> dict:
    """Warm up, then time `args.steps` optimizer steps at sequence length `seq`."""
    config = model.config
    batch_size = max(1, args.batch_tokens // seq)
    total = args.warmup_steps + args.steps
    split = synthetic_split(batch_size * total, seq, config.vocab_size, args.seed)
    batches = length_grouped_batches(split.lengths, batch_size, args.seed, 0)[:total]
    runtime = Runtime(device)
    optimizer = build_optimizer(model, 1e-4, 0.01, device)
    optim = Optim(optimizer, build_scheduler(optimizer, Train(warmup=0.1), total),
                  grad_scaler(runtime, "bf16"), 1.0)
    amp = autocast(runtime, "bf16")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started = 0.0
    for index, batch in enumerate(iterate_batches(split, batches, 0, device)):
        if index == args.warmup_steps:
            if cuda:
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        loss, _, _ = train_step(model, batch, optim, amp, 1.0, update=True)
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    timed = batches[args.warmup_steps:]
    lengths = np.concatenate([split.lengths[rows] for rows in timed])
    multiple = CUDA_PAD_MULTIPLE if cuda else 1  # as iterate_batches pads
    widths = np.concatenate([np.full(len(rows), -(-int(split.lengths[rows].max()) // multiple)
                                     * multiple) for rows in timed])
    params = matmul_parameters(model)
    flops = step_flops(params, config.num_hidden_layers, config.hidden_size, lengths)
    padded_flops = step_flops(params, config.num_hidden_layers, config.hidden_size, widths)
    result = {"seq_length": seq, "batch_size": batch_size, "steps": len(timed),
              "seconds": seconds, "samples_per_second": len(lengths) / seconds,
              "tokens_per_second": float(lengths.sum()) / seconds,
              "padded_tokens_per_second": float(widths.sum()) / seconds,
              "model_tflops_per_second": flops / seconds / 1e12,
              "padded_tflops_per_second": padded_flops / seconds / 1e12,
              "final_loss": float(loss.detach())}
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return result


def run(args: argparse.Namespace) -> dict:
    """Every sequence length on one model; MFU against the device's peak."""
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: use --device cpu (with --smoke for a quick check)")
        use_tf32()  # as the train stage does on CUDA
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({torch.get_num_threads()} threads)"
    torch.manual_seed(args.seed)
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    model = build_model(args, device)
    results = []
    for seq in args.seq_lengths:
        log.info("seq %d ...", seq)
        result = measure(model, args, seq, device)
        result["mfu"] = result["model_tflops_per_second"] / peak if peak else None
        result["mfu_padded"] = result["padded_tflops_per_second"] / peak if peak else None
        results.append(result)
    return {"device": name, "peak_bf16_tflops": peak, "torch": torch.__version__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "matmul_parameters": matmul_parameters(model),
            "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
            "results": results}


def format_report(report: dict) -> str:
    """One row per sequence length."""
    peak = report["peak_bf16_tflops"]
    lines = [f"{report['device']}: peak {peak if peak else 'unknown (pass --peak-tflops)'} "
             f"bf16 TFLOP/s; {report['parameters'] / 1e6:.1f}M parameters "
             f"({report['matmul_parameters'] / 1e6:.1f}M in matmuls), torch {report['torch']}",
             f"{'seq':>5} {'batch':>5} {'steps':>5} {'samples/s':>10} {'tokens/s':>10} "
             f"{'model TFLOP/s':>13} {'MFU':>6} {'MFU padded':>10} {'peak GiB':>8}"]
    for r in report["results"]:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mfu_padded = f"{r['mfu_padded']:.1%}" if r["mfu_padded"] is not None else "-"
        memory = f"{r['peak_memory_gib']:.1f}" if "peak_memory_gib" in r else "-"
        lines.append(f"{r['seq_length']:>5} {r['batch_size']:>5} {r['steps']:>5} "
                     f"{r['samples_per_second']:>10.1f} {r['tokens_per_second']:>10.0f} "
                     f"{r['model_tflops_per_second']:>13.2f} {mfu:>6} {mfu_padded:>10} "
                     f"{memory:>8}")
    lines.append("model FLOPs/step = 6 * matmul params * real tokens + "
                 "12 * layers * hidden * sum(length^2)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (see --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_throughput",
        description="Train a random bert-base classifier for a few steps per sequence "
                    "length (bf16 autocast, TF32, fused AdamW, pinned non-blocking "
                    "batches padded to a multiple of 8) and report samples/s, tokens/s "
                    "and model FLOPs utilisation. Finishes in about a minute on a "
                    "datacenter GPU.",
        epilog="MFU formula and peak table: see the module docstring.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--seq-lengths", type=lambda s: [int(v) for v in s.split(",")],
                        default=[128, 512], help="comma-separated maximum row lengths")
    parser.add_argument("--batch-tokens", type=int, default=16384,
                        help="batch size = batch_tokens // sequence length")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=5,
                        help="untimed steps first (kernel selection, allocator warm-up)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the device's peak bf16 TFLOP/s (0 = from the built-in table)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help=f"a tiny model and a few steps ({SMOKE}): checks that the "
                             "script runs, measures nothing worth keeping")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    if args.smoke:
        for key in ("seq_lengths", "batch_tokens", "steps", "warmup_steps"):
            setattr(args, key, SMOKE[key])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
