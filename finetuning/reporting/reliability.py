"""The report's reliability diagram: how far the model's confidence is from how often it
is right, per confidence bin (finetuning.metrics.reliability computes the bins)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from finetuning.metrics import expected_calibration_error
from finetuning.reporting.figures import to_png


def ece_noise(probs: np.ndarray, draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The ECE a perfectly calibrated model with these probabilities would still show on
    this many rows, from sampling alone: labels drawn from the probabilities themselves,
    `draws` times; (median, 95th percentile). An observed ECE above the 95th percentile is
    miscalibration, not the luck of a small split."""
    rng = np.random.default_rng(seed)
    cumulative = probs.cumsum(-1)
    values = [expected_calibration_error(probs, (rng.random((len(probs), 1)) > cumulative)
                                         .sum(-1).clip(max=probs.shape[1] - 1))
              for _ in range(draws)]
    return float(np.median(values)), float(np.percentile(values, 95))


def reliability_figure(bins: list[tuple[float, float, float, int]], title: str,
                       width: float = 1 / 15) -> bytes:
    """Reliability diagram: per confidence bin, its accuracy (filled) and its mean
    confidence (outlined; the gap between them is the miscalibration) against the
    diagonal, with the share of rows per bin below. `width`: of a bin (15 bins)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    edges = [hi - width for hi, *_ in bins]
    total = sum(rows for *_, rows in bins) or 1
    top.bar(edges, [acc for _, _, acc, _ in bins], width=width, align="edge",
            edgecolor="black", label="accuracy of the bin")
    top.bar(edges, [conf for _, conf, _, _ in bins], width=width, align="edge", fill=False,
            edgecolor="tab:red", linewidth=1.5, label="its mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(edges, [rows / total for *_, rows in bins], width=width, align="edge",
               edgecolor="black", color="tab:gray")
    bottom.set(xlabel="confidence (top class probability)", ylabel="share of rows")
    return to_png(fig)
