"""Tokenize once: truncation is flagged, not silent."""
import pytest
from transformers import BertTokenizerFast

from finetuning.data.tokenization import check_max_length, encode_batch
from finetuning.data.truncation import Truncation
from finetuning.errors import StageError


def test_encode_batch_flags_truncated_rows(tiny_model):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    batch = {"text": ["good", "the movie was really quite good and the plot was great"],
             "label": [1, 1]}
    out = encode_batch(batch, tokenizer, Truncation(8))
    assert out["truncated"] == [False, True]
    assert [len(ids) for ids in out["input_ids"]] == [3, 8]
    assert out["input_ids"][1][-1] == tokenizer.sep_token_id
    assert out["label"] == [1, 1]


def test_tokenized_output_is_the_same_wherever_the_repository_is(tiny_model, tmp_path):
    """Two clones tokenize the same data to the same bytes (a shared DVC cache hits)."""
    import pandas as pd

    from finetuning.data.tokenization import tokenize_splits
    from finetuning.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    states = []
    for clone in ("a", "b/deeper"):
        prepared = tmp_path / clone / "prepared"
        prepared.mkdir(parents=True)
        pd.DataFrame({"text": ["good film", "bad plot"], "label": [1, 0]}).to_parquet(
            prepared / "train.parquet", index=False)
        splits = tokenize_splits(prepared, tokenizer, Truncation(16))
        splits.save_to_disk(str(tmp_path / clone / "tok"))
        states.append((tmp_path / clone / "tok" / "train" / "state.json").read_text())
    assert states[0] == states[1]


def test_max_length_beyond_the_position_table_is_refused_naming_both(tiny_model):
    check_max_length(128, tiny_model)  # the tiny model's table: 128 positions
    with pytest.raises(StageError, match=r"tokenize.max_length is 129, but .*tiny-model.* "
                       r"holds at most 128 positions \(max_position_embeddings 128\)"):
        check_max_length(129, tiny_model)
