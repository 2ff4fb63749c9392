"""Texts to token ids, once, with the base model's fast tokenizer. No padding here:
batches are padded to their own longest row when they are made (batching.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import datasets
import numpy as np
from transformers import PreTrainedTokenizerBase

from finetuning.data.batching import usable_positions
from finetuning.data.truncation import Template, Truncation, longest_first
from finetuning.errors import StageError

FEATURES = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                              "label": datasets.Value("int64"),
                              "truncated": datasets.Value("bool")})
PAIR_FEATURES = datasets.Features({**FEATURES,
                                   "token_type_ids": datasets.List(datasets.Value("int8"))})


class Encoded(NamedTuple):
    """Tokenized texts: ids per row, whether each was cut, token types (pairs) or None."""

    ids: list[list[int]]
    truncated: list[bool]
    types: list[list[int]] | None


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


def encode_head(texts: list[str], tokenizer: PreTrainedTokenizerBase,
                max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Single texts cut at the head, the tokenizer's own way, in one pass: overflowing
    tokens come back as extra chunks, so a row with more than one chunk was truncated;
    only its first chunk is kept."""
    enc = tokenizer(texts, truncation=True, max_length=max_length,
                    return_overflowing_tokens=True, return_attention_mask=False,
                    return_token_type_ids=False)
    first: dict[int, int] = {}
    chunks = np.zeros(len(texts), dtype=np.int64)
    for chunk, row in enumerate(enc["overflow_to_sample_mapping"]):
        first.setdefault(row, chunk)
        chunks[row] += 1
    return [enc["input_ids"][first[row]] for row in range(len(texts))], (chunks > 1).tolist()


def bodies(texts: list[str], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Every text's token ids, uncut and without special tokens."""
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                     return_token_type_ids=False, verbose=False)["input_ids"]


def encode_texts(texts: list[str], tokenizer: PreTrainedTokenizerBase,
                 truncation: Truncation, pairs: list[str] | None = None) -> Encoded:
    """Token ids of each text (or pair of texts) cut as `truncation` says, whether it was
    cut, and for pairs the token types when the model takes them: the one tokenization of
    training and of every prediction afterwards."""
    if not texts:  # the tokenizer cannot take an empty batch
        return Encoded([], [], None)
    if pairs is None and truncation.mode == "head" and tokenizer.truncation_side == "right":
        return Encoded(*encode_head(texts, tokenizer, truncation.max_length), None)
    template = Template.of(tokenizer, pair=pairs is not None)
    budget = truncation.max_length - template.specials
    rows = [[body] for body in bodies(texts, tokenizer)]
    if pairs is not None:
        rows = [[*row, second] for row, second in zip(rows, bodies(pairs, tokenizer))]
    ids, types, truncated = [], [], []
    for row in rows:
        cut = list(longest_first(*row, budget)) if pairs is not None \
            else [truncation.cut(row[0], budget)]
        truncated.append(sum(map(len, cut)) < sum(map(len, row)))
        row_ids, row_types = template.assemble(cut)
        ids.append(row_ids)
        types.append(row_types)
    wants_types = pairs is not None and "token_type_ids" in tokenizer.model_input_names
    return Encoded(ids, truncated, types if wants_types else None)


def encode_batch(batch: dict, tokenizer: PreTrainedTokenizerBase,
                 truncation: Truncation) -> dict:
    """`encode_texts` for `Dataset.map`: a batch of rows with text[, text_pair] and label."""
    enc = encode_texts(batch["text"], tokenizer, truncation, batch.get("text_pair"))
    out = {"input_ids": enc.ids, "label": batch["label"], "truncated": enc.truncated}
    return out if enc.types is None else {**out, "token_type_ids": enc.types}


def length_stats(split: datasets.Dataset) -> dict:
    """Token-length distribution and truncation count of one tokenized split."""
    lengths = np.fromiter((len(ids) for ids in split["input_ids"]), dtype=np.int64)
    truncated = int(np.sum(split["truncated"]))
    return {"rows": len(lengths), "mean_length": round(float(lengths.mean()), 2),
            "p50_length": int(np.percentile(lengths, 50)),
            "p95_length": int(np.percentile(lengths, 95)), "max_length": int(lengths.max()),
            "truncated": truncated, "truncated_fraction": round(truncated / len(lengths), 4)}


def tokenize_splits(prepared: Path, tokenizer: PreTrainedTokenizerBase,
                    truncation: Truncation) -> datasets.DatasetDict:
    """Tokenize every `<split>.parquet` in `prepared` into a DatasetDict."""
    files = sorted(prepared.glob("*.parquet"))
    if not files:
        raise StageError(f"no prepared splits in {prepared}; run the prepare stage first")
    identity = tokenizer_identity(tokenizer)
    out = {}
    for file in files:
        split = datasets.Dataset.from_parquet(str(file), keep_in_memory=True)
        pairs = "text_pair" in split.column_names
        typed = pairs and "token_type_ids" in tokenizer.model_input_names
        out[file.stem] = split.map(encode_batch, batched=True, batch_size=1000,
                                   remove_columns=split.column_names,
                                   features=PAIR_FEATURES if typed else FEATURES,
                                   fn_kwargs={"tokenizer": tokenizer, "truncation": truncation},
                                   desc=f"tokenize {file.stem}", keep_in_memory=True,
                                   new_fingerprint=content_fingerprint(file, identity,
                                                                       truncation))
    return datasets.DatasetDict(out)


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> str:
    """The fast tokenizer's definition (vocabulary, normalizer, ...) without the truncation
    and padding settings that calling it leaves behind."""
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    for runtime in ("truncation", "padding"):
        definition.pop(runtime, None)
    return json.dumps(definition, sort_keys=True)


def content_fingerprint(file: Path, tokenizer: str, truncation: Truncation) -> str:
    """What the tokenized split depends on, hashed: the prepared file's bytes, the
    tokenizer and the truncation. datasets would otherwise hash the file's absolute
    path, so the same data tokenized in another clone would differ (and DVC would rerun
    everything after tokenize, and a shared DVC cache would never hit)."""
    digest = hashlib.sha256(file.read_bytes())
    digest.update(tokenizer.encode())
    digest.update(str(truncation.max_length).encode())
    if truncation.mode != "head":  # (so a head run's fingerprint is what it always was)
        digest.update(f"{truncation.mode}:{truncation.head_tokens}".encode())
    return digest.hexdigest()[:16]
