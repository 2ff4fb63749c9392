"""Texts in, label scores out: the one prediction path behind `finetune predict`, `finetune
serve` and the export stage's measurements, on every backend.

Texts (or pairs of texts) are tokenized as in training (the model folder's tokenizer,
cut at the `max_length` and by the truncation it was trained with, both recorded in its
tokenizer config: finetuning/data/truncation.py), sorted by length, cut into batches
padded to their own longest row (where a cut saves more padding than a forward pass
costs), run, and put back in order.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from finetuning.data.batching import TokenizedSplit, collate, padding_aware_batches
from finetuning.data.tokenization import encode_texts
from finetuning.data.tokenizer import load_tokenizer
from finetuning.data.truncation import Truncation
from finetuning.errors import StageError
from finetuning.inference.backends import load_backend
from finetuning.monitoring.drift import read_reference

FUNCTIONS = ("softmax", "sigmoid", "none")  # Hugging Face's `function_to_apply`


def transform(logits: np.ndarray, function: str = "softmax") -> np.ndarray:
    """Scores from logits, as Hugging Face's text-classification `function_to_apply`."""
    logits = logits.astype(np.float64)
    if function == "softmax":
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if function == "none":
        return logits
    raise ValueError(f"function_to_apply must be one of {FUNCTIONS}, got {function!r}")


def ranked(scores: np.ndarray, labels: list[str], top_k: int | None = None) -> list[dict]:
    """One row's `{"label", "score"}` pairs, highest score first, the first `top_k`."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [{"label": labels[i], "score": float(scores[i])} for i in order]


@dataclass(frozen=True)
class Scored:
    """What a model made of some texts, in input order."""

    logits: np.ndarray     # float32, texts x labels
    lengths: np.ndarray    # tokens of each text after truncation
    truncated: np.ndarray  # whether each text was cut at max_length


class Predictor:
    """A fine-tuned model folder (HF or ONNX export) ready to score texts."""

    def __init__(self, folder: str | Path, backend: str = "auto", batch_size: int = 32,
                 threads: int = 0):
        self.folder = Path(folder)
        self.backend = load_backend(self.folder, backend, threads)
        self.tokenizer = load_tokenizer(self.folder)
        config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        self.labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        self.truncation = Truncation.recorded(self.tokenizer,
                                              config.get("max_position_embeddings"))
        self.batch_size = batch_size
        self.reference = read_reference(self.folder)  # validation, to watch drift against

    @property
    def max_length(self) -> int:
        return self.truncation.max_length

    def check_pairs(self, paired: bool) -> None:
        """Refuse single texts for a model trained on pairs, and pairs for one trained on
        single texts: either would be scored on inputs it never learned."""
        if paired != self.truncation.pairs:
            raise StageError(
                f"{self.folder} was trained on sentence pairs (prepare.text_pair_column): "
                "give each text its pair (predict: --text-pair-column; serve: inputs "
                '{"text": ..., "text_pair": ...})' if self.truncation.pairs else
                f"{self.folder} was trained on single texts: it takes no text_pair")

    def encode(self, texts: list[str], pairs: list[str] | None = None
               ) -> tuple[TokenizedSplit, np.ndarray]:
        """Token ids of every text (or pair), tokenized and truncated as in training, as
        one flat split; and which texts were cut."""
        enc = encode_texts(texts, self.tokenizer, self.truncation, pairs)
        split = TokenizedSplit.of_rows(enc.ids, enc.types)
        return split, np.asarray(enc.truncated, dtype=bool)

    def batches(self, split: TokenizedSplit) -> Iterator[tuple[np.ndarray, dict]]:
        """(rows, padded numpy batch) in length order, cut where padding costs most."""
        for rows in padding_aware_batches(split.lengths, self.batch_size):
            batch = collate(split, rows, self.tokenizer.pad_token_id)
            yield rows, {key: value.numpy() for key, value in batch.items()}

    def run(self, texts: list[str], progress: bool = False,
            pairs: list[str] | None = None) -> Scored:
        """Logits of every text (with its `pairs` text, if given) in input order, with its
        token count and truncation."""
        self.check_pairs(pairs is not None)
        logits = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        split, truncated = self.encode(texts, pairs)
        with tqdm(total=len(texts), unit="text", desc="predict", disable=not progress,
                  leave=False) as bar:
            for rows, batch in self.batches(split):
                logits[rows] = self.backend.logits(batch)
                bar.update(len(rows))
        return Scored(logits, split.lengths, truncated)

    def logits(self, texts: list[str], progress: bool = False,
               pairs: list[str] | None = None) -> np.ndarray:
        """float32 logits of every text (or pair), in input order."""
        return self.run(texts, progress, pairs).logits

    def predictions(self, logits: np.ndarray) -> list[dict]:
        """Per row of logits: the top label, its probability, every label's probability."""
        probs = transform(logits)
        best = probs.argmax(-1)
        return [{"label": self.labels[b], "score": float(p[b]),
                 "scores": {name: float(v) for name, v in zip(self.labels, p)}}
                for b, p in zip(best, probs)]

    def predict(self, texts: list[str], progress: bool = False,
                pairs: list[str] | None = None) -> list[dict]:
        """Per text: the top label, its probability, and every label's probability."""
        return self.predictions(self.logits(texts, progress, pairs))
