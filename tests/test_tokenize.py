"""Tokenize once: truncation is flagged, not silent."""
from transformers import BertTokenizerFast

from finetuning.data.tokenization import encode_batch


def test_encode_batch_flags_truncated_rows(tiny_model):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    batch = {"text": ["good", "the movie was really quite good and the plot was great"],
             "label": [1, 1]}
    out = encode_batch(batch, tokenizer, max_length=8)
    assert out["truncated"] == [False, True]
    assert [len(ids) for ids in out["input_ids"]] == [3, 8]
    assert out["input_ids"][1][-1] == tokenizer.sep_token_id
    assert out["label"] == [1, 1]
