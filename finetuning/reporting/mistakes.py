"""The wrong predictions a model was surest of, as one table: the report lists the test
split's, TensorBoard's TEXT tab the validation split's at each evaluation."""
from __future__ import annotations

import numpy as np

from finetuning.metrics import confident_mistakes
from finetuning.reporting.document import Table

MAX_TEXT = 300  # characters of a mistaken example shown


def shorten(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def mistakes_table(texts: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str],
                   limit: int) -> Table:
    """Up to `limit` misclassified rows, most confident first: text, true and predicted
    label, and the probability the model gave its (wrong) prediction."""
    preds = probs.argmax(-1)
    rows = [[str(n + 1), shorten(texts[i]), names[labels[i]], names[preds[i]],
             f"{probs[i, preds[i]]:.4f}"]
            for n, i in enumerate(confident_mistakes(labels, probs, limit))]
    return Table(["#", "text", "true", "predicted", "probability"], rows)
