"""The one tensorboardX writer wrapper, and the reader that gets logs back out.

Tags follow the tutorial this product grew from: `train/loss`, `eval/accuracy`, ... The
log folder name is fixed (no timestamps in names we control), so `tensorboard --logdir`
shows one run per pipeline run.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import SummaryWriter

# Keep every event: the default guidance samples scalars and keeps one histogram.
KEEP_ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "compressedHistograms": 0}


class MetricsWriter:
    """Writes scalars and histograms under one log folder; a no-op on non-zero DDP ranks."""

    def __init__(self, logdir: str | Path, enabled: bool = True):
        self.writer = SummaryWriter(str(logdir), flush_secs=10) if enabled else None

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """One `add_scalar` per key: tag = prefix + key."""
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(prefix + key, value, step)

    def histograms(self, values: Mapping[str, torch.Tensor | np.ndarray], step: int) -> None:
        """One `add_histogram` per key (tensors are copied to the host here)."""
        if self.writer:
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    value = value.detach().float().cpu().numpy()
                self.writer.add_histogram(key, value, step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer:
            self.writer.close()


def load_events(logdir: str | Path) -> EventAccumulator:
    """tensorboard's own reader over `logdir`, keeping every event."""
    if not Path(logdir).is_dir():
        raise FileNotFoundError(f"no TensorBoard log folder at {logdir}")
    acc = EventAccumulator(str(logdir), size_guidance=KEEP_ALL)
    acc.Reload()
    return acc


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in `logdir` as {tag: [(step, value), ...]} in step order."""
    acc = load_events(logdir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}
