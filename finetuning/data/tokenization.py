"""Texts to token ids, once, with the base model's fast tokenizer. No padding here:
batches are padded to their own longest row when they are made (batching.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
from transformers import PreTrainedTokenizerBase

from finetuning.data.batching import usable_positions
from finetuning.errors import StageError

FEATURES = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                              "label": datasets.Value("int64"),
                              "truncated": datasets.Value("bool")})


def check_max_length(max_length: int, model: Path) -> None:
    """Refuse a `tokenize.max_length` longer than the model's position table, before any
    work: the model could not read such rows (it fails mid-training, or pads past the table)."""
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    limit = usable_positions(config)
    if limit is not None and max_length > limit:
        raise StageError(f"tokenize.max_length is {max_length}, but {model} holds at most "
                         f"{limit} positions (max_position_embeddings "
                         f"{config['max_position_embeddings']}); set tokenize.max_length "
                         f"<= {limit}")


def encode_texts(texts: list[str], tokenizer: PreTrainedTokenizerBase,
                 max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text, truncated at `max_length`, and whether it was cut: the one
    tokenization of training and of every prediction afterwards.

    One pass: overflowing tokens come back as extra chunks, so a row with more than one
    chunk was truncated; only its first chunk is kept.
    """
    if not texts:  # the tokenizer cannot take an empty batch
        return [], []
    enc = tokenizer(texts, truncation=True, max_length=max_length,
                    return_overflowing_tokens=True, return_attention_mask=False,
                    return_token_type_ids=False)
    first: dict[int, int] = {}
    chunks = np.zeros(len(texts), dtype=np.int64)
    for chunk, row in enumerate(enc["overflow_to_sample_mapping"]):
        first.setdefault(row, chunk)
        chunks[row] += 1
    return [enc["input_ids"][first[row]] for row in range(len(texts))], (chunks > 1).tolist()


def encode_batch(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """`encode_texts` for `Dataset.map`: a batch of rows with text and label."""
    ids, truncated = encode_texts(batch["text"], tokenizer, max_length)
    return {"input_ids": ids, "label": batch["label"], "truncated": truncated}


def length_stats(split: datasets.Dataset) -> dict:
    """Token-length distribution and truncation count of one tokenized split."""
    lengths = np.fromiter((len(ids) for ids in split["input_ids"]), dtype=np.int64)
    truncated = int(np.sum(split["truncated"]))
    return {"rows": len(lengths), "mean_length": round(float(lengths.mean()), 2),
            "p50_length": int(np.percentile(lengths, 50)),
            "p95_length": int(np.percentile(lengths, 95)), "max_length": int(lengths.max()),
            "truncated": truncated, "truncated_fraction": round(truncated / len(lengths), 4)}


def tokenize_splits(prepared: Path, tokenizer: PreTrainedTokenizerBase,
                    max_length: int) -> datasets.DatasetDict:
    """Tokenize every `<split>.parquet` in `prepared` into a DatasetDict."""
    files = sorted(prepared.glob("*.parquet"))
    if not files:
        raise StageError(f"no prepared splits in {prepared}; run the prepare stage first")
    identity = tokenizer_identity(tokenizer)
    out = {}
    for file in files:
        split = datasets.Dataset.from_parquet(str(file), keep_in_memory=True)
        out[file.stem] = split.map(encode_batch, batched=True, batch_size=1000,
                                   remove_columns=split.column_names, features=FEATURES,
                                   fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
                                   desc=f"tokenize {file.stem}", keep_in_memory=True,
                                   new_fingerprint=content_fingerprint(file, identity,
                                                                       max_length))
    return datasets.DatasetDict(out)


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> str:
    """The fast tokenizer's definition (vocabulary, normalizer, ...) without the truncation
    and padding settings that calling it leaves behind."""
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    for runtime in ("truncation", "padding"):
        definition.pop(runtime, None)
    return json.dumps(definition, sort_keys=True)


def content_fingerprint(file: Path, tokenizer: str, max_length: int) -> str:
    """What the tokenized split depends on, hashed: the prepared file's bytes, the
    tokenizer and the truncation. datasets would otherwise hash the file's absolute
    path, so the same data tokenized in another clone would differ (and DVC would rerun
    everything after tokenize, and a shared DVC cache would never hit)."""
    digest = hashlib.sha256(file.read_bytes())
    digest.update(tokenizer.encode())
    digest.update(str(max_length).encode())
    return digest.hexdigest()[:16]
