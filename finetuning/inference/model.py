"""Loading a sequence classifier and predicting whole tokenized splits with it (the train
and evaluate stages, the benchmarks)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from finetuning.data.batching import (TokenizedSplit, iterate_batches, model_inputs, sorted_batches,
                                      usable_positions)
from finetuning.errors import StageError
from finetuning.metrics import classification_report


def load_classifier(folder: str | Path, labels: list[str] | None = None) -> PreTrainedModel:
    """Load a sequence classifier with SDPA attention; with `labels`, (re)build the head
    for those label names (only the head is new for a pretrained encoder)."""
    kwargs = {}
    if labels is not None:
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {name: i for i, name in enumerate(labels)}}
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation="sdpa", local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        raise StageError(f"could not load a classifier from {folder}: {err}") from err


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, split: TokenizedSplit, batch_size: int, pad_id: int,
                   device: torch.device, amp: contextlib.AbstractContextManager | None = None,
                   embeddings: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits for every row of `split`, in row order, on the CPU; with
    `embeddings`, also each row's sentence vector (the last layer's first token).

    Rows are batched in length order (least padding); the results are scattered back.
    """
    was_training = model.training
    model.eval()
    batches = sorted_batches(split.lengths, batch_size)
    logits, vectors = [], []
    limit = usable_positions(model.config) if hasattr(model, "config") else None
    for batch in iterate_batches(split, batches, pad_id, device, limit):
        with amp or contextlib.nullcontext():
            out = model(**model_inputs(batch), output_hidden_states=embeddings)
        logits.append(out.logits.float().cpu())
        if embeddings:
            vectors.append(out.hidden_states[-1][:, 0].float().cpu())
    model.train(was_training)
    order = torch.from_numpy(np.concatenate(batches))
    result = torch.empty(len(split), logits[0].shape[-1])
    result[order] = torch.cat(logits)
    if not embeddings:
        return result
    pooled = torch.empty(len(split), vectors[0].shape[-1])
    pooled[order] = torch.cat(vectors)
    return result, pooled


def score_splits(model: torch.nn.Module, splits: dict[str, TokenizedSplit], batch_size: int,
                 pad_id: int, device: torch.device,
                 amp: contextlib.AbstractContextManager | None = None
                 ) -> dict[str, tuple[torch.Tensor, dict[str, float]]]:
    """Logits and scores (loss, accuracy, macro precision / recall / F1) of each split."""
    num_labels = model.config.num_labels
    out = {}
    for name, split in splits.items():
        logits = predict_logits(model, split, batch_size, pad_id, device, amp)
        out[name] = logits, classification_report(logits, split.labels, num_labels)
    return out


def predictions_frame(inputs: pd.DataFrame, labels: np.ndarray, logits: torch.Tensor,
                      names: list[str]) -> pd.DataFrame:
    """One row per example: its text (and text_pair) columns, true and predicted label
    names, class probabilities."""
    probs = logits.softmax(-1).numpy()
    frame = inputs.reset_index(drop=True).assign(
        label=[names[i] for i in labels], predicted=[names[i] for i in probs.argmax(-1)],
        confidence=probs.max(-1))
    for i, name in enumerate(names):
        frame[f"prob_{name}"] = probs[:, i]
    return frame
