"""What training keeps between steps: the running figures of a log window (sums on the
device, read once per log step) and the position in the run (enough to resume exactly)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from finetuning.config import Config
from finetuning.errors import StageError
from finetuning.metrics import RunningMetrics
from finetuning.training.runtime import Runtime


@dataclass
class Window:
    """Training figures between two log steps: sums on the device, counts on the host."""

    metrics: RunningMetrics
    grad_norm: torch.Tensor       # sum of the finite gradient norms of the window's updates
    grad_updates: torch.Tensor    # how many there were (an fp16 overflow's inf is left out)
    first_bad_step: torch.Tensor  # first step with a non-finite loss, -1 if none
    samples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def create(cls, num_labels: int, device: torch.device) -> Window:
        """An empty window on `device`."""
        return cls(RunningMetrics(num_labels, device), torch.zeros((), device=device),
                   torch.zeros((), device=device),
                   torch.full((), -1, dtype=torch.int64, device=device))

    def add(self, step: int, loss, logits, batch, grad_norm, real_tokens: int) -> None:
        """Account one micro-batch (no host sync)."""
        self.metrics.update(loss, logits, batch["labels"])
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad_step < 0)
        self.first_bad_step.masked_fill_(bad, step)
        self.samples += batch["input_ids"].shape[0]
        self.padded_tokens += batch["input_ids"].numel()
        self.real_tokens += real_tokens
        if grad_norm is not None:
            norm = grad_norm.detach().float()
            finite = torch.isfinite(norm)
            self.grad_norm += torch.where(finite, norm, 0.0)
            self.grad_updates += finite

    def check_finite(self, step: int, cfg: Config, checkpoint_step: int | None) -> None:
        """Stop with a useful message if a loss went NaN/inf (a host sync)."""
        bad = int(self.first_bad_step.item())
        if bad < 0:
            return
        kept = (f"the last good checkpoint (step {checkpoint_step}) is kept in "
                f"{cfg.paths.checkpoints}" if checkpoint_step else "no checkpoint was made yet")
        raise StageError(f"non-finite loss at step {bad + 1} (seen at step {step}); {kept}. "
                         f"Likely causes: train.learning_rate={cfg.train.learning_rate} too high, "
                         f"or train.precision={cfg.train.precision} overflowing (fp16: try "
                         "bf16 or fp32)")

    def flush(self, runtime: Runtime) -> dict[str, float]:
        """Figures of the window over all ranks (the one host sync), then reset."""
        seconds = time.perf_counter() - self.started
        counts = torch.tensor([self.samples, self.real_tokens, self.padded_tokens],
                              dtype=torch.float64, device=runtime.device)
        if runtime.distributed:
            torch.distributed.all_reduce(counts)
        samples, real, padded = counts.tolist()
        scores = self.metrics.compute()
        out = {"loss": scores["loss"], "accuracy": scores["accuracy"],
               "grad_norm": self.grad_norm.item() / max(1.0, self.grad_updates.item()),
               "samples_per_second": samples / seconds, "tokens_per_second": real / seconds,
               "padding_efficiency": real / padded if padded else 1.0}
        self.metrics.reset()
        self.grad_norm.zero_()
        self.grad_updates.zero_()
        self.samples = self.real_tokens = self.padded_tokens = 0
        self.started = time.perf_counter()
        return out

    def state_dict(self) -> dict:
        """Running sums, for a checkpoint taken between log steps."""
        return {"loss_sum": self.metrics.loss_sum, "confusion": self.metrics.confusion,
                "grad_norm": self.grad_norm, "grad_updates": self.grad_updates,
                "counts": [self.samples, self.real_tokens, self.padded_tokens],
                "seconds": time.perf_counter() - self.started}

    def load_state_dict(self, state: dict) -> None:
        """Restore running sums saved by `state_dict`."""
        self.metrics.loss_sum.copy_(state["loss_sum"])
        self.metrics.confusion.copy_(state["confusion"])
        self.grad_norm.copy_(state["grad_norm"])
        self.grad_updates.copy_(state["grad_updates"])
        self.samples, self.real_tokens, self.padded_tokens = state["counts"]
        # The window's time so far, so samples/s of the first window after a resume is
        # over the time those samples took, not over the time since the restart.
        self.started = time.perf_counter() - state["seconds"]


@dataclass
class Progress:
    """Where training is: enough, with the seeded batch order, to resume exactly."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0  # next micro-batch of `epoch`
    samples: int = 0
    real_tokens: int = 0
    train_seconds: float = 0.0
    checkpoint_step: int = 0
    last: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
