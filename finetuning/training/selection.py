"""Which weights a run keeps (`train.select`: the last step's or the best validation's by
`train.select_metric`) and when it stops early (`train.patience` validations without
improvement). Decided on validation only, never on test."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from finetuning.training.checkpoint import load_trainable, trainable_state

LOWER_IS_BETTER = ("loss",)


@dataclass
class Selection:
    """The chosen step so far: its validation scores and logits, and its weights (a CPU
    copy, kept only under `select: best` on the rank that saves the model)."""

    select: str
    metric: str
    patience: int
    step: int = 0
    value: float | None = None      # the best select_metric seen (for improvement)
    best_step: int = 0
    stale: int = 0                  # validations since the last improvement
    report: dict | None = None      # validation scores of the chosen step
    logits: torch.Tensor | None = None
    weights: dict[str, torch.Tensor] | None = None

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best so far (strictly)."""
        if self.value is None:
            return True
        return value < self.value if self.metric in LOWER_IS_BETTER else value > self.value

    def observe(self, step: int, report: dict, logits: torch.Tensor, model: torch.nn.Module,
                keep_weights: bool) -> None:
        """Account one validation at `step`; remember it if it is the one to keep."""
        better = self.improved(report[self.metric])
        if better:
            self.value, self.best_step, self.stale = report[self.metric], step, 0
        else:
            self.stale += 1
        if self.select == "last" or better:
            self.step, self.report, self.logits = step, report, logits
            if self.select == "best" and keep_weights:
                self.weights = {k: v.detach().to("cpu", copy=True)
                                for k, v in trainable_state(model).items()}

    @property
    def exhausted(self) -> bool:
        """Patience used up: stop training."""
        return bool(self.patience) and self.stale >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Load the chosen weights into `model` (nothing to do for `select: last`)."""
        if self.weights is not None:
            load_trainable(model, self.weights)

    def why(self, last_step: int) -> str:
        """One line for train.json, TensorBoard and the report."""
        if self.select == "last":
            return f"the last step ({last_step}), train.select = last"
        return (f"the best validation {self.metric} ({self.value:.4f}) of the steps "
                f"validated, train.select = best; last step {last_step}")

    def state_dict(self) -> dict:
        """Everything, for a checkpoint (tensors stay tensors)."""
        return {k: getattr(self, k) for k in ("step", "value", "best_step", "stale", "report",
                                              "logits", "weights")}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`'s output."""
        for key, value in state.items():
            setattr(self, key, value)
