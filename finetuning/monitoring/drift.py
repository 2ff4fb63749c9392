"""Is the traffic a model sees like the data it was validated on?

The evaluate stage records a reference from the validation split: the mix of labels the
model predicts there, and the distribution of token lengths (in bins at its deciles). It
travels in the model folder (`drift_reference.json`). Live predictions (a rolling window
in `finetune serve`, a whole run of `finetune predict`) are compared with it by the
population stability index, PSI = sum over bins of (live - ref) * ln(live / ref): 0 for
the same mix; by the usual rule of thumb below 0.1 is no real shift, 0.1-0.25 a
moderate one, above 0.25 a large one.
"""
from __future__ import annotations

import json
import shutil
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = "drift_reference.json"
LENGTH_QUANTILES = np.linspace(0.1, 0.9, 9)  # bin edges at the validation deciles
SMOOTHING = 1e-4  # a share of 0 would make PSI infinite


@dataclass(frozen=True)
class Reference:
    """The validation split as the model saw it."""

    labels: list[str]
    label_shares: list[float]   # of the model's predictions on validation
    length_edges: list[float]   # inner edges of the token-length bins
    length_shares: list[float]
    rows: int

    def length_bins(self, lengths: np.ndarray) -> np.ndarray:
        """The bin of each token length."""
        return length_bins(self.length_edges, lengths)


def length_bins(edges: list[float], lengths: np.ndarray) -> np.ndarray:
    """Bin index of each length: 0 below the first edge, len(edges) from the last on."""
    return np.searchsorted(np.asarray(edges), lengths, side="right")


def shares(values: np.ndarray, bins: int) -> np.ndarray:
    """The fraction of `values` (bin indices) in each of `bins` bins."""
    counts = np.bincount(np.asarray(values, dtype=np.int64), minlength=bins)[:bins]
    return counts / max(1, counts.sum())


def build_reference(labels: list[str], predicted: np.ndarray, lengths: np.ndarray
                    ) -> Reference:
    """The reference of a validation split: predicted label indices, token lengths."""
    edges = np.unique(np.quantile(lengths, LENGTH_QUANTILES)).tolist()
    return Reference(labels, shares(predicted, len(labels)).tolist(), edges,
                     shares(length_bins(edges, lengths), len(edges) + 1).tolist(), len(lengths))


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index of `live` shares against `reference` shares."""
    ref = np.clip(np.asarray(reference, dtype=np.float64), SMOOTHING, None)
    now = np.clip(np.asarray(live, dtype=np.float64), SMOOTHING, None)
    ref, now = ref / ref.sum(), now / now.sum()
    return float(np.sum((now - ref) * np.log(now / ref)))


def drift(reference: Reference, predicted: np.ndarray, lengths: np.ndarray) -> dict:
    """PSI of predicted labels and of token lengths against the reference."""
    return {"label_psi": psi(reference.label_shares, shares(predicted, len(reference.labels))),
            "length_psi": psi(reference.length_shares,
                              shares(reference.length_bins(lengths), len(reference.length_shares)))}


def write_reference(reference: Reference, path: Path) -> None:
    """Save a reference as JSON."""
    path.write_text(json.dumps(asdict(reference), indent=2) + "\n", encoding="utf-8")


def copy_reference(source: Path, target: Path) -> None:
    """Put the reference in `source` (the evaluate stage's folder) into a model folder."""
    shutil.copyfile(source / REFERENCE_FILE, target / REFERENCE_FILE)


def read_reference(folder: str | Path) -> Reference | None:
    """The reference in a model folder, if it has one."""
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        return None
    return Reference(**json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class DriftWatch:
    """How the service watches drift: PSI over the last `window` predictions, once it has
    `minimum` of them; a warning in the log when it rises above `threshold`."""

    window: int = 1000
    minimum: int = 100
    threshold: float = 0.25


class DriftWindow:
    """The last `size` predictions and lengths of a service, and their PSI against the
    reference (None until `minimum` predictions were seen). Thread-safe."""

    def __init__(self, reference: Reference, size: int, minimum: int):
        self.reference, self.minimum = reference, minimum
        self.predicted: deque[int] = deque(maxlen=size)
        self.lengths: deque[int] = deque(maxlen=size)
        self.lock = threading.Lock()

    def add(self, predicted: np.ndarray, lengths: np.ndarray) -> dict | None:
        """Add a batch; the window's drift now, or None while it is too small."""
        with self.lock:
            self.predicted.extend(int(p) for p in predicted)
            self.lengths.extend(int(n) for n in lengths)
            if len(self.predicted) < self.minimum:
                return None
            return {**drift(self.reference, np.array(self.predicted), np.array(self.lengths)),
                    "window": len(self.predicted)}


def summarize(labels: list[str], predicted: np.ndarray, lengths: np.ndarray,
              truncated: np.ndarray, reference: Reference | None) -> dict:
    """What a batch of predictions looked like: label mix, token lengths, truncation and,
    with a reference, drift against validation (None without one)."""
    counts = np.bincount(predicted, minlength=len(labels)) if len(predicted) else \
        np.zeros(len(labels), dtype=np.int64)
    lengths = np.asarray(lengths) if len(lengths) else np.zeros(1, dtype=np.int64)
    return {"texts": int(len(predicted)),
            "labels": {name: int(n) for name, n in zip(labels, counts)},
            "length": {"mean": round(float(lengths.mean()), 2),
                       "p50": float(np.percentile(lengths, 50)),
                       "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max())},
            "truncated": int(np.sum(truncated)),
            "drift": drift(reference, predicted, lengths) if reference and len(predicted)
            else None}


def describe(summary: dict, threshold: float) -> str:
    """A summary in one log line; the drift part says whether it crossed `threshold`."""
    total = max(1, summary["texts"])
    mix = ", ".join(f"{name} {n / total:.0%}" for name, n in summary["labels"].items())
    length = summary["length"]
    line = (f"{summary['texts']} texts; labels {mix}; tokens mean {length['mean']:.0f}, "
            f"p95 {length['p95']:.0f}, max {length['max']}; {summary['truncated']} truncated")
    figures = summary["drift"]
    if figures is None:
        return line + "; no drift reference in the model folder"
    worst = max(figures["label_psi"], figures["length_psi"])
    verdict = "OVER" if worst > threshold else "under"
    return (line + f"; drift against validation: PSI labels {figures['label_psi']:.3f}, "
            f"lengths {figures['length_psi']:.3f} ({verdict} {threshold:.2f})")
