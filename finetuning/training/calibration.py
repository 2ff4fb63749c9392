"""Temperature scaling (Guo et al. 2017): one scalar T fitted on the validation split's
logits to minimise log-loss, then folded into the classification head's last linear layer
(weights and bias divided by T). Every consumer of the saved folder (`pipeline`, predict,
serve, the ONNX export) gets calibrated probabilities with no extra code, and the argmax
(hence every accuracy) is unchanged since T > 0."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from finetuning.errors import StageError

# Search range of log(1/T): T from 1/100 to 100. Log-loss is convex in 1/T, hence unimodal
# in log(1/T), so a golden-section search finds the minimum without gradients or a seed.
BOUND = math.log(100.0)
GOLDEN = (math.sqrt(5) - 1) / 2


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor | np.ndarray,
                    iterations: int = 80) -> float:
    """The temperature T minimising the mean cross-entropy of `logits / T` on `labels`."""
    logits = logits.double()
    labels = torch.as_tensor(labels, dtype=torch.long)

    def loss(log_inverse: float) -> float:
        return float(F.cross_entropy(logits * math.exp(log_inverse), labels))

    low, high = -BOUND, BOUND
    a, b = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - GOLDEN * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + GOLDEN * (high - low)
            fb = loss(b)
    return math.exp(-(low + high) / 2)


def output_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The last linear layer producing the model's logits (BERT's `classifier`,
    RoBERTa's `classifier.out_proj`, ...)."""
    num_labels = model.config.num_labels
    found = [m for m in model.modules()
             if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not found:
        raise StageError(f"cannot calibrate {type(model).__name__}: no linear layer with "
                         f"{num_labels} outputs (set train.calibrate: false)")
    return found[-1]


@torch.no_grad()
def fold_temperature(model: torch.nn.Module, temperature: float) -> None:
    """Divide the logits layer's weight and bias by `temperature`, in place."""
    layer = output_layer(model)
    layer.weight.div_(temperature)
    if layer.bias is not None:
        layer.bias.div_(temperature)
