"""The one tensorboardX writer wrapper (events.py reads the logs back).

Tags follow the tutorial this product grew from: `train/loss`, `eval/accuracy`, ... The
log folder name is fixed (no timestamps in names we control), so `tensorboard --logdir`
shows one run per pipeline run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tensorboardX import SummaryWriter

HPARAMS_RUN = "hparams"  # fixed sub-run name: tensorboardX would otherwise use time.time()


def to_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    """Host copy of a tensor (a device sync: call only at log steps)."""
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value)


class MetricsWriter:
    """Writes one run's events under a fixed folder; a no-op on non-zero DDP ranks.

    `purge_step` (when resuming) makes TensorBoard drop events at or after that step left
    by the interrupted run, so the resumed log has no duplicated or interleaved steps.
    """

    def __init__(self, logdir: str | Path, enabled: bool = True, purge_step: int | None = None):
        self.logdir = Path(logdir)
        self.segment = 0
        self.writer = (SummaryWriter(str(logdir), flush_secs=10, purge_step=purge_step,
                                     filename_suffix=".0") if enabled else None)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """One `add_scalar` per key: tag = prefix + key."""
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(prefix + key, value, step)

    def histograms(self, values: Mapping[str, torch.Tensor | np.ndarray], step: int) -> None:
        """One `add_histogram` per key."""
        if self.writer:
            for key, value in values.items():
                self.writer.add_histogram(key, to_numpy(value), step)

    def pr_curve(self, tag: str, labels: np.ndarray, probs: np.ndarray, step: int) -> None:
        """Precision-recall curve of one class (labels: 1 for that class)."""
        if self.writer:
            self.writer.add_pr_curve(tag, labels, probs, step)

    def figure(self, tag: str, figure, step: int) -> None:
        """A matplotlib figure as an image (closed afterwards)."""
        if self.writer:
            self.writer.add_figure(tag, figure, step, close=True)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """Markdown text (tables render in the TEXT tab)."""
        if self.writer:
            self.writer.add_text(tag, markdown, step)

    def hparams(self, params: Mapping[str, float | str], metrics: Mapping[str, float],
                step: int) -> None:
        """Params with final metrics for the HPARAMS tab, under a fixed sub-run name."""
        if self.writer:
            self.writer.add_hparams(dict(params), dict(metrics), name=HPARAMS_RUN,
                                    global_step=step)

    def embedding(self, vectors: np.ndarray, metadata: Sequence[Sequence[str]],
                  header: Sequence[str], step: int, tag: str) -> None:
        """Vectors with per-row metadata for the PROJECTOR tab."""
        if self.writer:
            self.writer.add_embedding(vectors, metadata=[list(m) for m in metadata],
                                      metadata_header=list(header), global_step=step, tag=tag)

    def flush(self) -> None:
        """Make everything logged so far durable, before a checkpoint: a resume starts the
        log right after the checkpoint's step, so nothing before it may be lost.

        tensorboardX writes from a queue in a thread, and its flush() does not drain that
        queue; close() does. So close, and continue in a new event file of the same run.
        """
        if self.writer:
            self.writer.close()
            self.segment += 1
            self.writer = SummaryWriter(str(self.logdir), flush_secs=10,
                                        filename_suffix=f".{self.segment}")

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer:
            self.writer.close()
