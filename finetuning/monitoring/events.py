"""Reading tensorboardX logs back with tensorboard's own reader (the report, the tests)."""
from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# Keep every event: the default guidance samples scalars and keeps one histogram.
KEEP_ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "compressedHistograms": 0}


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
