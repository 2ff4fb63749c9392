"""Model loading and batched prediction, shared by the train and evaluate stages."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from stages.batching import TokenizedSplit, iterate_batches, sorted_batches
from stages.errors import StageError
from stages.metrics import confusion_matrix, scores


def load_classifier(folder: str | Path, labels: list[str] | None = None) -> PreTrainedModel:
    """Load a sequence classifier with SDPA attention; with `labels`, (re)build the head
    for those label names (only the head is new for a pretrained encoder)."""
    kwargs = {}
    if labels is not None:
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {name: i for i, name in enumerate(labels)}}
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation="sdpa", **kwargs)
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
    for batch in iterate_batches(split, batches, pad_id, device):
        with amp or contextlib.nullcontext():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        output_hidden_states=embeddings)
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


def classification_report(logits: torch.Tensor, labels: torch.Tensor | np.ndarray,
                          num_labels: int) -> dict[str, float]:
    """Mean cross-entropy loss, accuracy and macro precision / recall / F1."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    confusion = confusion_matrix(logits.argmax(-1), labels, num_labels).numpy()
    return {"loss": float(F.cross_entropy(logits, labels)), **scores(confusion),
            "count": int(len(labels))}
