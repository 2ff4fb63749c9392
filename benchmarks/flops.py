"""Model FLOPs utilisation (MFU) on a CPU, for the training benchmarks: the machine's own
fp32 matmul peak, measured in the same run, against the matmul FLOPs training needs.

Per real (unpadded) token: forward 2N, backward 2N for the activations plus 2N_trainable
for the weight gradients, N = the weights of the classifier's linear layers (attention's
own T^2 terms are left out); full fine-tuning trains all N, so 6N.
"""
from __future__ import annotations

import time

import torch


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a square fp32 torch.mm on this process's threads (best of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size ** 3 / best


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def linear_weights(folder: str, labels: list[str]) -> int:
    """N: the weights of every linear layer of the classifier built on `folder`."""
    from finetuning.inference.model import load_classifier

    model = load_classifier(folder, labels)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def mfu(run: dict, weights: int, peak: float) -> float:
    """Model FLOPs utilisation of one run with `tokens_per_second` (real tokens) and
    `trainable_parameters` (all of them when absent: full fine-tuning)."""
    trainable = min(run.get("trainable_parameters") or weights, weights)
    return (4 * weights + 2 * trainable) * run["tokens_per_second"] / peak
