"""Length-grouped batching over a tokenized split held as one flat token array.

Rows of similar length share a batch, so padding (wasted compute) stays small while the
order stays random: shuffle, cut into mega-batches, sort each mega-batch by length, cut
into batches, shuffle the batches.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import datasets
import numpy as np
import torch

MEGA_BATCH = 50  # batches per sorted mega-batch: larger = less padding, less randomness
# Position tables that start after the padding index (positions pad_id+1 ...).
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert", "data2vec-text",
                              "longformer", "xlm-roberta-xl"})
CUDA_PAD_MULTIPLE = 8  # tensor cores want widths in multiples of 8; on CPU it only adds work
# A forward pass's fixed cost in padded-token equivalents: MiniLM on 2 CPU cores served
# random 16-text batches ~20% faster cut this way than padded as one (48-96 did best).
PASS_COST_TOKENS = 64


@dataclass(frozen=True)
class TokenizedSplit:
    """A split as flat token ids plus row offsets: batching is numpy slicing, no Python
    objects per token, no tokenization after the tokenize stage."""

    tokens: np.ndarray   # int32, every row's ids concatenated
    offsets: np.ndarray  # int64, row i is tokens[offsets[i]:offsets[i + 1]]
    labels: np.ndarray   # int64
    types: np.ndarray | None = None  # int8 token types beside tokens (pairs), or None

    @cached_property  # read at every training step: computed once per split
    def lengths(self) -> np.ndarray:
        """Token count of each row."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> TokenizedSplit:
        """A new split of the given rows, in that order."""
        spans = [slice(self.offsets[r], self.offsets[r + 1]) for r in rows]
        offsets = np.concatenate([[0], np.cumsum([s.stop - s.start for s in spans])])

        def pick(flat: np.ndarray) -> np.ndarray:
            return np.concatenate([flat[s] for s in spans]) if spans else flat[:0]
        return TokenizedSplit(pick(self.tokens), offsets.astype(np.int64), self.labels[rows],
                              None if self.types is None else pick(self.types))

    @classmethod
    def of_rows(cls, ids: list[list[int]], types: list[list[int]] | None = None,
                labels: np.ndarray | None = None) -> TokenizedSplit:
        """A split from per-row lists (a prediction request's texts, just tokenized)."""
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def flat(rows: list[list[int]], dtype: type) -> np.ndarray:
            return np.fromiter((t for row in rows for t in row), dtype=dtype,
                               count=int(lengths.sum()))
        return cls(flat(ids, np.int32), offsets,
                   np.zeros(len(ids), dtype=np.int64) if labels is None else labels,
                   None if types is None else flat(types, np.int8))


def flat_values(column) -> np.ndarray:
    """The values of an arrow list column, rows concatenated (a slice's rows only)."""
    offsets = column.offsets.to_numpy()
    return column.values.to_numpy()[offsets[0]:offsets[-1]]


def split_from_dataset(split: datasets.Dataset) -> TokenizedSplit:
    """Convert a tokenized `datasets` split (input_ids, label) to a `TokenizedSplit`."""
    table = split.with_format("arrow")[:]  # honours a selection's indices mapping
    ids = table.column("input_ids").combine_chunks()
    offsets = ids.offsets.to_numpy().astype(np.int64)
    tokens = flat_values(ids).astype(np.int32, copy=False)
    types = None
    if "token_type_ids" in table.column_names:  # sentence pairs: one type per token
        types = flat_values(table.column("token_type_ids").combine_chunks()).astype(np.int8)
    return TokenizedSplit(tokens, offsets - offsets[0],
                          table.column("label").to_numpy().astype(np.int64), types)


def load_splits(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, TokenizedSplit]:
    """Load every split written by the tokenize stage, except those named in `skip`."""
    dataset = datasets.load_from_disk(str(folder))
    return {name: split_from_dataset(dataset[name]) for name in dataset if name not in skip}


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int,
                           epoch: int) -> list[np.ndarray]:
    """Random batches of similar-length rows; a new order per (seed, epoch).

    The longest batch goes first so an out-of-memory error shows at step 0, not hours in.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * MEGA_BATCH
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start:start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    longest = int(np.argmax([lengths[b].max() for b in batches]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def shard_batches(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """This rank's share of a batch order; every rank gets the same number of batches
    (the tail that does not divide evenly is dropped) so DDP all-reduces stay in step."""
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches in length order, for evaluation: the least padding, order irrelevant."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def padding_aware_batches(lengths: np.ndarray, max_rows: int,
                          pass_cost: int = PASS_COST_TOKENS) -> list[np.ndarray]:
    """Batches of at most `max_rows` rows in length order, cut where padding would cost
    more than another forward pass: the cut minimises padded tokens plus `pass_cost` token
    equivalents per batch (dynamic programming over the sorted lengths, O(rows x max_rows)).

    For a small mixed batch (a server's concurrent requests) this beats one padded batch;
    for many rows it comes out close to `sorted_batches`.
    """
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order].tolist()
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        width = ordered[end - 1]  # the longest row of any batch ending here
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + (end - start) * width + pass_cost
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches, end = [], len(order)
    while end:
        batches.append(order[cut[end]:end])
        end = cut[end]
    return batches[::-1]


def usable_positions(config) -> int | None:
    """The longest sequence a model's position table holds (a config object or its
    dict): `max_position_embeddings`, less the offset of RoBERTa-style tables, whose
    positions start after the padding index. None when the model has no such table."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    positions = get("max_position_embeddings")
    if positions is None:
        return None
    if get("model_type") in OFFSET_POSITIONS:
        positions -= (get("pad_token_id") or 0) + 1
    return int(positions)


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a model is given


def model_inputs(batch: dict) -> dict:
    """The model's inputs of a batch (token types only for sentence pairs)."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch}


def collate(split: TokenizedSplit, rows: np.ndarray, pad_id: int,
            pad_to_multiple_of: int = 1, max_width: int | None = None
            ) -> dict[str, torch.Tensor]:
    """Pad the given rows to the batch's longest row (rounded up to a multiple, which
    tensor cores like, but never past `max_width`, the position table's end) and return
    input_ids, attention_mask (and token_type_ids for pairs), labels."""
    lengths = split.lengths[rows]
    longest = int(lengths.max())
    width = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    if max_width is not None:
        width = max(longest, min(width, max_width))
    columns = np.arange(width)
    mask = columns < lengths[:, None]
    # One gather for the whole batch; positions past a row's end read a clamped index
    # and are overwritten with pad_id.
    index = np.minimum(split.offsets[rows][:, None] + columns, len(split.tokens) - 1)
    ids = np.where(mask, split.tokens[index], pad_id)
    batch = {"input_ids": torch.from_numpy(ids.astype(np.int64)),
             "attention_mask": torch.from_numpy(mask.astype(np.int64))}
    if split.types is not None:
        batch["token_type_ids"] = torch.from_numpy(np.where(mask, split.types[index], 0)
                                                   .astype(np.int64))
    return {**batch, "labels": torch.from_numpy(split.labels[rows])}


def iterate_batches(split: TokenizedSplit, batches: list[np.ndarray], pad_id: int,
                    device: torch.device, max_width: int | None = None
                    ) -> Iterator[dict[str, torch.Tensor]]:
    """Collate and move batches to `device`; on CUDA padded to a multiple of 8 (at most
    `max_width`) and copied via pinned memory, without blocking."""
    cuda = device.type == "cuda"
    multiple = CUDA_PAD_MULTIPLE if cuda else 1
    for rows in batches:
        batch = collate(split, rows, pad_id, multiple, max_width)
        if cuda:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        yield {k: v.to(device, non_blocking=cuda) for k, v in batch.items()}
