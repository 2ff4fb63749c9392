"""Length-grouped batching: every row once per epoch, little padding, seeded randomness."""
import datasets
import numpy as np
import torch

from finetuning.data.batching import (TokenizedSplit, collate, length_grouped_batches,
                                      shard_batches, sorted_batches, split_from_dataset,
                                      usable_positions)


def padding_efficiency(lengths, batches):
    return sum(lengths[b].sum() for b in batches) / sum(lengths[b].max() * len(b) for b in batches)


def test_length_grouped_batches_cover_every_row_once():
    lengths = np.random.default_rng(0).integers(3, 64, 1000)
    batches = length_grouped_batches(lengths, 32, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 32


def test_length_grouping_pads_far_less_than_random_batches():
    lengths = np.random.default_rng(0).integers(3, 64, 4000)
    grouped = length_grouped_batches(lengths, 32, seed=1, epoch=0)
    perm = np.random.default_rng(1).permutation(4000)
    random_batches = [perm[i:i + 32] for i in range(0, 4000, 32)]
    assert padding_efficiency(lengths, grouped) > 0.9
    assert padding_efficiency(lengths, random_batches) < 0.65


def test_order_is_seeded_and_changes_per_epoch():
    lengths = np.arange(200) % 17 + 1
    a = length_grouped_batches(lengths, 8, seed=3, epoch=0)
    b = length_grouped_batches(lengths, 8, seed=3, epoch=0)
    c = length_grouped_batches(lengths, 8, seed=3, epoch=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_longest_batch_comes_first():
    lengths = np.random.default_rng(0).integers(1, 500, 3000)
    batches = length_grouped_batches(lengths, 16, seed=0, epoch=2)
    assert lengths[batches[0]].max() == lengths.max()


def test_shards_are_disjoint_and_equal_in_size():
    batches = [np.array([i]) for i in range(11)]
    shards = [shard_batches(batches, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    flat = [int(b[0]) for s in shards for b in s]
    assert len(set(flat)) == 9


def test_sorted_batches_are_in_length_order():
    lengths = np.array([5, 1, 3, 2, 4])
    assert [b.tolist() for b in sorted_batches(lengths, 2)] == [[1, 3], [2, 4], [0]]


def test_split_from_dataset_and_collate_pad_per_batch():
    ds = datasets.Dataset.from_dict({"input_ids": [[2, 7, 3], [2, 3], [2, 9, 9, 9, 3]],
                                     "label": [1, 0, 1]})
    split = split_from_dataset(ds.select([1, 2, 0]))  # a selection: non-zero arrow offsets
    assert split.lengths.tolist() == [2, 5, 3]
    batch = collate(split, np.array([0, 2]), pad_id=0, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[2, 3, 0, 0], [2, 7, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert torch.equal(batch["labels"], torch.tensor([0, 1]))


def test_padding_to_a_multiple_stops_at_the_position_table():
    split = TokenizedSplit(np.arange(20, dtype=np.int32), np.array([0, 10, 20]),
                           np.array([0, 1]))
    assert collate(split, np.array([0]), 0, pad_to_multiple_of=8)["input_ids"].shape[1] == 16
    capped = collate(split, np.array([0, 1]), 0, pad_to_multiple_of=8, max_width=12)
    assert capped["input_ids"].shape[1] == 12  # 10 rounds to 16; the table holds 12
    assert capped["attention_mask"].sum().item() == 20


def test_usable_positions_of_bert_and_roberta_style_tables():
    assert usable_positions({"model_type": "bert", "max_position_embeddings": 512}) == 512
    roberta = {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    assert usable_positions(roberta) == 512
    assert usable_positions({"model_type": "mystery"}) is None


def test_tokenized_split_len():
    split = TokenizedSplit(np.zeros(3, np.int32), np.array([0, 1, 3]), np.array([0, 1]))
    assert len(split) == 2 and split.lengths.tolist() == [1, 2]


def test_padding_aware_batches_cover_every_row_once_and_cut_where_padding_costs():
    from finetuning.data.batching import padding_aware_batches

    lengths = np.array([60, 5, 6, 58, 5, 61, 7, 59])
    batches = padding_aware_batches(lengths, max_rows=8, pass_cost=64)
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    # Four short and four long rows: two batches beat one padded to 61 (8 x 61 = 488
    # tokens + 64) since 4 x 7 + 4 x 61 + 2 x 64 = 400.
    assert [sorted(lengths[b].tolist()) for b in batches] == [[5, 5, 6, 7], [58, 59, 60, 61]]
    # A pass cost above the padding saved keeps one batch; max_rows still caps it.
    assert len(padding_aware_batches(lengths, 8, pass_cost=1000)) == 1
    capped = padding_aware_batches(lengths, 3, pass_cost=1000)
    assert len(capped) == 3 and all(len(b) <= 3 for b in capped)  # as few as the cap allows
    assert padding_aware_batches(np.array([], dtype=np.int64), 4) == []
