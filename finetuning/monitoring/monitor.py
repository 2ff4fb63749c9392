"""What the train stage shows in TensorBoard, and when; sits beside the loop, not in it.

Every group is switchable and has its own interval (params `tensorboard:`). Everything
here runs at log, histogram or evaluation steps only: the loop's hot path never waits.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict

import numpy as np
import torch

from finetuning.config import Config
from finetuning.metrics import confusion_matrix
from finetuning.monitoring.writer import MetricsWriter, to_numpy
from finetuning.reporting.document import table_markdown
from finetuning.reporting.figures import confusion_figure
from finetuning.reporting.mistakes import mistakes_table

LAYER = re.compile(r"(?:^|\.)(embeddings|encoder\.layer\.\d+|pooler|classifier)(?:\.|$)")


def layer_group(name: str) -> str:
    """Histogram group of a parameter: embeddings, encoder.layer.N, pooler, classifier;
    a LoRA adapter's `lora/encoder.layer.N`."""
    match = LAYER.search(name)
    group = match.group(1) if match else name.split(".")[0]
    return f"lora/{group}" if ".lora_" in name else group


def grouped_parameters(model: torch.nn.Module, grads: bool) -> dict[str, torch.Tensor]:
    """All weights (or gradients) of each layer group, flattened into one tensor."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        value = param.grad if grads else param
        if value is not None:
            groups.setdefault(layer_group(name), []).append(value.detach().flatten())
    return {group: torch.cat(values) for group, values in groups.items()}


class Monitor:
    """Decides what goes to TensorBoard at each kind of step."""

    def __init__(self, writer: MetricsWriter, cfg: Config, val_texts: list[str]):
        self.writer, self.cfg, self.tb = writer, cfg, cfg.tensorboard
        self.labels = cfg.prepare.labels
        self.val_texts = val_texts

    def start(self, step: int, model: torch.nn.Module) -> None:
        """The resolved config, as run, and the parameter counts, at the first step."""
        resolved = {k: v for k, v in asdict(self.cfg).items() if k != "paths"}
        self.writer.text("config", "```json\n" + json.dumps(resolved, indent=2) + "\n```", step)
        params = list(model.parameters())
        self.writer.scalars({"parameters": sum(p.numel() for p in params),
                             "trainable_parameters": sum(p.numel() for p in params
                                                         if p.requires_grad)}, step, "model/")

    def histograms_due(self, step: int) -> bool:
        """Whether this optimizer step logs histograms."""
        return bool(self.tb.histogram_every) and step % self.tb.histogram_every == 0

    def histograms(self, step: int, batch: dict[str, torch.Tensor], logits: torch.Tensor,
                   lengths: np.ndarray, model: torch.nn.Module) -> None:
        """The tutorial's batch histograms, sequence lengths, weights and gradients."""
        self.writer.histograms({"input_ids": batch["input_ids"],
                                "attention_mask": batch["attention_mask"],
                                "logits": logits, "targets": batch["labels"],
                                "sequence_length": lengths}, step)
        if self.tb.weight_histograms:
            for kind, grads in (("weights", False), ("gradients", True)):
                groups = grouped_parameters(model, grads)
                self.writer.histograms({f"{kind}/{g}": v for g, v in groups.items()}, step)

    def evaluation(self, step: int, report: dict, logits: torch.Tensor,
                   labels: np.ndarray) -> None:
        """Validation scalars, PR curves, confusion image and the mistakes table."""
        self.writer.scalars({k: v for k, v in report.items() if k != "count"}, step, "eval/")
        probs = to_numpy(logits.softmax(-1))
        if self.tb.pr_curves:
            for i, name in enumerate(self.labels):
                self.writer.pr_curve(f"pr/{name}", (labels == i).astype(int), probs[:, i], step)
        if self.tb.confusion_matrix:
            confusion = confusion_matrix(logits.argmax(-1), torch.as_tensor(labels),
                                         len(self.labels)).numpy()
            self.writer.figure("eval/confusion_matrix", confusion_figure(
                confusion, self.labels, f"validation, step {step}"), step)
        if self.tb.mistakes:
            table = mistakes_table(self.val_texts, labels, probs, self.labels, self.tb.mistakes)
            self.writer.text("eval/mistakes", table_markdown(table) if table.rows
                             else "no misclassified examples", step)

    def selected(self, step: int, selected: int, why: str, calibration: dict | None) -> None:
        """Which step's weights the run keeps and why, and the fitted temperature with the
        validation calibration before and after (at the last step)."""
        self.writer.scalars({"selected_step": selected}, step, "selection/")
        self.writer.text("selection", f"kept step {selected}: {why}", step)
        if calibration:
            self.writer.scalars(calibration, step, "calibration/")

    def embeddings(self, step: int, vectors: torch.Tensor, labels: np.ndarray,
                   preds: np.ndarray, rows: np.ndarray) -> None:
        """Pooled sentence embeddings of validation rows, labelled, for the projector."""
        metadata = [(self.labels[labels[i]], self.labels[preds[i]],
                     self.val_texts[r].replace("\t", " ").replace("\n", " ")[:200])
                    for i, r in enumerate(rows)]
        self.writer.embedding(to_numpy(vectors), metadata, ("label", "predicted", "text"),
                              step, "validation")
