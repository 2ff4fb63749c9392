"""Loading a model folder's tokenizer, the same way in every stage and command."""
from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from finetuning.errors import StageError


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The model folder's fast tokenizer (slow ones silently mis-load vocab files in v5)."""
    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True, local_files_only=True)
    if not tokenizer.is_fast:
        raise StageError(f"{folder}: no fast tokenizer (tokenizer.json) could be built")
    return tokenizer
