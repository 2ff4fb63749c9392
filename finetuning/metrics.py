"""Classification metrics from logits, accumulated on the device.

Running sums stay tensors on the model's device; reading them (`compute`) is the one host
sync, done only at log steps.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from finetuning.config import OOD_PREFIX


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Counts[true, predicted] as a (num_labels, num_labels) tensor on the inputs' device.

    A scatter into a fixed-size tensor, not `torch.bincount`: on CUDA bincount reads the
    input's min and max back to size its output, a host sync on every training step.
    """
    flat = labels.long().flatten() * num_labels + preds.long().flatten()
    counts = torch.zeros(num_labels * num_labels, dtype=torch.int64, device=flat.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat)).view(num_labels, num_labels)


def class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 of a confusion matrix[true, predicted].

    A class never predicted (or never present) scores 0 precision (recall), as in
    scikit-learn's `zero_division=0`.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_pos = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, actual, out=np.zeros_like(true_pos), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(true_pos), where=both > 0)
    return precision, recall, f1


def scores(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy, macro precision / recall / F1 and Matthews correlation."""
    confusion = np.asarray(confusion, dtype=np.float64)
    precision, recall, f1 = class_scores(confusion)
    total = confusion.sum()
    return {"accuracy": float(np.trace(confusion) / total) if total else 0.0,
            "precision": float(precision.mean()), "recall": float(recall.mean()),
            "f1": float(f1.mean()), "mcc": matthews(confusion)}


def per_class(logits: torch.Tensor, labels: np.ndarray, names: list[str]) -> dict[str, dict]:
    """{label name: precision, recall, F1 and support (true rows)} of one split."""
    confusion = confusion_matrix(logits.argmax(-1), torch.as_tensor(labels, dtype=torch.long),
                                 len(names)).numpy()
    precision, recall, f1 = class_scores(confusion)
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(confusion[i].sum())}
            for i, name in enumerate(names)}


def matthews(confusion: np.ndarray) -> float:
    """Matthews correlation of a confusion matrix, the multi-class form (Gorodkin 2004,
    as scikit-learn's): 1 perfect, 0 no better than chance; 0 when undefined."""
    total, correct = confusion.sum(), np.trace(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    numerator = correct * total - predicted @ actual
    denominator = np.sqrt((total ** 2 - predicted @ predicted) * (total ** 2 - actual @ actual))
    return float(numerator / denominator) if denominator > 0 else 0.0


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15
                ) -> list[tuple[float, float, float, int]]:
    """Per non-empty bin of confidence (the top probability; `bins` equal-width bins
    (lo, hi]): (bin upper edge, mean confidence, accuracy, rows)."""
    confidence, correct = probs.max(-1), probs.argmax(-1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return [((b + 1) / bins, float(confidence[which == b].mean()),
             float(correct[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15
                               ) -> float:
    """ECE: over the reliability bins, the share of rows times |accuracy - mean
    confidence| (Guo et al. 2017)."""
    return float(sum(rows * abs(accuracy - confidence)
                     for _, confidence, accuracy, rows in reliability(probs, labels, bins))
                 / len(labels))


def classification_report(logits: torch.Tensor, labels: torch.Tensor | np.ndarray,
                          num_labels: int) -> dict[str, float]:
    """Mean cross-entropy loss, accuracy, macro precision / recall / F1, Matthews
    correlation, expected calibration error (15 bins) and the count."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    confusion = confusion_matrix(logits.argmax(-1), labels, num_labels).numpy()
    probs = torch.softmax(logits.double(), -1).numpy()
    return {"loss": float(F.cross_entropy(logits, labels)), **scores(confusion),
            "ece": expected_calibration_error(probs, labels.numpy()),
            "count": int(len(labels))}


def confident_mistakes(labels: np.ndarray, probs: np.ndarray, limit: int) -> np.ndarray:
    """Rows whose prediction (argmax of `probs`) is wrong, most confident first, at most
    `limit` of them (ties keep row order)."""
    preds = probs.argmax(-1)
    wrong = np.flatnonzero(preds != labels)
    return wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:limit]


class RunningMetrics:
    """Loss and confusion counts summed on the device between log steps."""

    def __init__(self, num_labels: int, device: torch.device):
        self.num_labels = num_labels
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Start a new window."""
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.confusion = torch.zeros(self.num_labels, self.num_labels, dtype=torch.int64,
                                     device=self.device)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch; `loss` is the batch mean. No host sync."""
        self.loss_sum += loss.detach().double() * labels.numel()
        self.confusion += confusion_matrix(logits.argmax(-1), labels, self.num_labels)

    def compute(self) -> dict[str, float]:
        """Mean loss and scores of the window so far, over all ranks (a host sync)."""
        loss_sum, confusion = self.loss_sum.clone(), self.confusion.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(loss_sum)
            torch.distributed.all_reduce(confusion)
        confusion = confusion.cpu().numpy()
        count = confusion.sum()
        return {"loss": float(loss_sum.item() / count) if count else float("nan"),
                **scores(confusion)}


def nest_results(results: dict[str, dict]) -> dict:
    """{"validation": .., "test": .., "ood": {"<set>": ..}} from flat split names."""
    nested: dict = {"ood": {}}
    for name, scores in results.items():
        if name.startswith(OOD_PREFIX):
            nested["ood"][name.removeprefix(OOD_PREFIX)] = scores
        else:
            nested[name] = scores
    return nested
