"""How long texts are cut (head, tail, head+tail; pairs longest-first as the tokenizers
library does), and that the setting travels with the trained model."""
from __future__ import annotations

import numpy as np
import pytest

from finetuning.config import Tokenize
from finetuning.data.tokenization import encode_texts
from finetuning.data.tokenizer import load_tokenizer
from finetuning.data.truncation import Template, Truncation, longest_first, truncation_of
from finetuning.training.loop import class_weights


LONG = " ".join(["good", "bad", "the", "movie", "plot", "acting"] * 5)  # 30 word tokens


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


@pytest.mark.parametrize("mode, head, expect", [
    ("head", 0, slice(0, 10)), ("tail", 0, slice(20, 30)),
    ("head+tail", 4, [*range(4), *range(24, 30)])])
def test_long_texts_keep_head_tail_or_both(tokenizer, mode, head, expect):
    body = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(body) == 30
    enc = encode_texts([LONG, "good"], tokenizer, Truncation(12, mode, head))
    kept = body[expect] if isinstance(expect, slice) else [body[i] for i in expect]
    assert enc.ids[0] == [tokenizer.cls_token_id, *kept, tokenizer.sep_token_id]
    assert enc.ids[1] == tokenizer("good")["input_ids"] and enc.truncated == [True, False]
    assert enc.types is None


def test_head_cuts_like_the_tokenizer_itself(tokenizer):
    ours = encode_texts([LONG], tokenizer, Truncation(12, "tail", 0))
    theirs = tokenizer(LONG, truncation=True, max_length=12)["input_ids"]
    tokenizer.truncation_side = "left"
    try:
        left = tokenizer(LONG, truncation=True, max_length=12)["input_ids"]
    finally:
        tokenizer.truncation_side = "right"
    assert ours.ids[0] == left
    assert encode_texts([LONG], tokenizer, Truncation(12)).ids[0] == theirs


def test_pairs_get_token_types_and_are_cut_longest_first(tokenizer):
    enc = encode_texts(["good movie", LONG], tokenizer, Truncation(16),
                       pairs=[LONG, "bad"])
    assert [len(ids) for ids in enc.ids] == [16, 16] and enc.truncated == [True, True]
    first = tokenizer("good movie", "good bad")
    assert enc.ids[0][:4] == first["input_ids"][:4]  # [CLS] good movie [SEP]
    assert enc.types[0] == [0] * 4 + [1] * 12
    assert enc.types[1][-3:] == [0, 1, 1] and enc.ids[1][-2:] == [tokenizer.vocab["bad"],
                                                                  tokenizer.sep_token_id]
    short = encode_texts(["good"], tokenizer, Truncation(16), pairs=["bad"])
    assert short.ids[0] == tokenizer("good", "bad")["input_ids"]
    assert short.types[0] == tokenizer("good", "bad")["token_type_ids"]


@pytest.mark.parametrize("lengths, budget, kept", [
    ((100, 10), 50, (40, 10)), ((10, 100), 50, (10, 40)), ((100, 100), 50, (25, 25)),
    ((30, 30), 50, (25, 25)), ((5, 5), 50, (5, 5)), ((30, 40), 51, (25, 26)),
    ((40, 30), 51, (26, 25)), ((26, 100), 51, (25, 26)), ((100, 100), 51, (25, 26))])
def test_longest_first_cuts_the_longer_text(lengths, budget, kept):
    a, b = longest_first(list(range(lengths[0])), list(range(lengths[1])), budget)
    assert (len(a), len(b)) == kept and a == list(range(kept[0]))


@pytest.mark.parametrize("max_length", [9, 12, 15, 16, 21])
def test_pairs_are_cut_as_the_tokenizer_cuts_them(tokenizer, max_length):
    """What `pipeline(..., truncation=True)` does with the saved model: the same ids."""
    words = LONG.split()
    firsts, seconds = [" ".join(words[:n]) for n in (3, 9, 17, 30)], \
        [" ".join(words[-n:]) for n in (12, 4, 17, 30)]
    ours = encode_texts(firsts, tokenizer, Truncation(max_length), pairs=seconds)
    theirs = tokenizer(firsts, seconds, truncation=True, max_length=max_length,
                       return_token_type_ids=True)
    assert ours.ids == theirs["input_ids"] and ours.types == theirs["token_type_ids"]


def test_the_template_reads_where_special_tokens_go(tokenizer):
    single, pair = Template.of(tokenizer, False), Template.of(tokenizer, True)
    assert single.specials == 2 and pair.specials == 3 and pair.body_types == (0, 1)


def test_truncation_travels_in_the_saved_tokenizer(tokenizer, tmp_path):
    import json

    settings = {"both": Truncation(12, "head+tail", 4), "tail": Truncation(20, "tail"),
                "head": Truncation(9), "pairs": Truncation(16, pairs=True)}
    for name, setting in settings.items():
        copy = load_tokenizer(tokenizer.name_or_path)
        setting.record(copy)
        copy.save_pretrained(tmp_path / name)
        assert Truncation.recorded(load_tokenizer(tmp_path / name), 128) == setting
    assert Truncation.recorded(load_tokenizer(tmp_path / "tail"), 16).max_length == 16
    tail = load_tokenizer(tmp_path / "tail")
    assert tail.truncation_side == "left"  # what transformers.pipeline cuts by
    saved = json.loads((tmp_path / "head" / "tokenizer_config.json").read_text())
    assert not {"truncation_mode", "head_tokens", "text_pair"} & set(saved)  # as before


def test_balanced_class_weights_make_every_class_weigh_the_same():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = class_weights(labels, 3, "balanced")
    assert weights == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert np.bincount(labels) @ np.array(weights) == pytest.approx(10)  # each class: 10/3
    assert class_weights(labels, 3, "none") is None




def test_head_tokens_default_to_a_quarter_of_max_length():
    assert truncation_of(Tokenize(max_length=512, truncation="head+tail")).head_tokens == 128
    assert truncation_of(Tokenize(max_length=64, truncation="head+tail", head_tokens=10)
                         ).head_tokens == 10
    assert truncation_of(Tokenize(max_length=64)) == Truncation(64)
