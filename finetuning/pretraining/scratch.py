"""A base built from nothing (`fetch.model: scratch`): a WordPiece tokenizer trained on
the train split's texts, and a BERT of the `scratch:` size with seeded random weights.

BERT's normalizer with `handle_chinese_chars` puts spaces around CJK characters, so
Chinese text becomes one token per character, as in Google's Chinese BERT.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from finetuning.config import Scratch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(texts: list[str], vocab_size: int, max_positions: int) -> BertTokenizer:
    """An uncased WordPiece tokenizer of at most `vocab_size` tokens learnt from `texts`,
    with BERT's [CLS] a [SEP] (b [SEP]) template."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer, length=len(texts))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    # BertTokenizer, not PreTrainedTokenizerFast: that one drops token_type_ids.
    return BertTokenizer(tokenizer_object=tok, model_max_length=max_positions)


def scratch_model(cfg: Scratch, tokenizer: BertTokenizer, seed: int) -> BertForMaskedLM:
    """A BERT with a masked-LM head, randomly initialised from `seed`."""
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size,
                        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                        intermediate_size=cfg.intermediate_size,
                        max_position_embeddings=cfg.max_positions,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return BertForMaskedLM(config)
