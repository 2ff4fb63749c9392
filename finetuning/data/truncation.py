"""Which tokens of a long text the model sees, the same in training and in every prediction.

`head` keeps the start (what tokenizers do by default), `tail` the end, `head+tail` the
first `head_tokens` and the end (Sun et al. 2019, "How to fine-tune BERT for text
classification": 128 + 382 of 512 tokens gave the lowest IMDB error). A pair of texts
(`text_pair`) is cut longest-first, the longer text losing tokens from its end, exactly as
the `tokenizers` library does.

The setting travels with the trained model in its tokenizer config (`model_max_length`,
`truncation_side` left for tail, `truncation_mode`/`head_tokens` for head+tail, and
`text_pair` for a model trained on pairs), so `finetune predict`, `finetune serve` and the
export read it back; `transformers.pipeline` honours `model_max_length` and
`truncation_side` (head+tail it cuts as head).
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from finetuning.errors import StageError


@dataclass(frozen=True)
class Truncation:
    """How a text longer than `max_length` tokens (special tokens included) is cut."""

    max_length: int
    mode: str = "head"
    head_tokens: int = 0
    pairs: bool = False  # trained on sentence pairs: predictions must be pairs too

    def record(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write this setting into `tokenizer` (saved with it by `save_pretrained`, which
        writes the keys of `init_kwargs`; a head run of single texts adds none)."""
        tokenizer.model_max_length = self.max_length
        side = "left" if self.mode == "tail" else "right"
        tokenizer.truncation_side = side
        if side != "right" or "truncation_side" in tokenizer.init_kwargs:
            tokenizer.init_kwargs["truncation_side"] = side
        for key in ("truncation_mode", "head_tokens", "text_pair"):
            tokenizer.init_kwargs.pop(key, None)
        if self.mode != "head":
            tokenizer.init_kwargs["truncation_mode"] = self.mode
        if self.mode == "head+tail":
            tokenizer.init_kwargs["head_tokens"] = self.head_tokens
        if self.pairs:
            tokenizer.init_kwargs["text_pair"] = True

    @classmethod
    def recorded(cls, tokenizer: PreTrainedTokenizerBase, limit: int | None) -> Truncation:
        """The setting a trained model's tokenizer carries (head at `model_max_length`
        for a folder written before the setting was recorded), at most `limit` tokens."""
        length = tokenizer.model_max_length if limit is None \
            else min(tokenizer.model_max_length, limit)
        kwargs = tokenizer.init_kwargs
        return cls(length, kwargs.get("truncation_mode", "head"),
                   int(kwargs.get("head_tokens", 0)), bool(kwargs.get("text_pair", False)))

    def cut(self, body: list[int], budget: int) -> list[int]:
        """The tokens of one text's body (no special tokens) kept within `budget`."""
        if len(body) <= budget:
            return body
        if self.mode == "tail":
            return body[len(body) - budget:]
        if self.mode == "head+tail":
            head = min(self.head_tokens, budget - 1)
            return body[:head] + body[len(body) - (budget - head):]
        return body[:budget]


def truncation_of(cfg, pairs: bool = False) -> Truncation:
    """The truncation a `Tokenize` params section asks for (`pairs`: of sentence pairs)."""
    head = (cfg.head_tokens or cfg.max_length // 4) if cfg.truncation == "head+tail" else 0
    return Truncation(cfg.max_length, cfg.truncation, head, pairs)


@dataclass(frozen=True)
class Template:
    """Where a tokenizer puts its special tokens around one text or a pair, and the token
    type of each part, read off by encoding two one-token texts."""

    parts: tuple[tuple[list[int], list[int]], ...]  # (special ids, their token types)
    body_types: tuple[int, ...]                     # the token type of text, of text_pair

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, pair: bool) -> Template:
        probes = ["a", "b"][:1 + pair]
        bodies = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in probes]
        full = tokenizer(*probes, return_token_type_ids=True)
        ids, types = full["input_ids"], full["token_type_ids"]
        parts, body_types, start = [], [], 0
        for probe, body in zip(probes, bodies):
            at = next((i for i in range(start, len(ids)) if ids[i:i + len(body)] == body),
                      None)
            if at is None or not body:
                raise StageError(f"{tokenizer.name_or_path}: cannot tell where its special "
                                 f"tokens go (the text {probe!r} encodes to {body} alone "
                                 f"and to {ids} with them)")
            parts.append((ids[start:at], types[start:at]))
            body_types.append(types[at])
            start = at + len(body)
        parts.append((ids[start:], types[start:]))
        return cls(tuple(parts), tuple(body_types))

    @property
    def specials(self) -> int:
        return sum(len(ids) for ids, _ in self.parts)

    def assemble(self, bodies: list[list[int]]) -> tuple[list[int], list[int]]:
        """Token ids and token types of the bodies with the special tokens around them."""
        ids, types = [], []
        for (special, special_types), body, body_type in zip(self.parts, bodies,
                                                             self.body_types):
            ids += special + body
            types += special_types + [body_type] * len(body)
        last, last_types = self.parts[-1]
        return ids + last, types + last_types


def longest_first(first: list[int], second: list[int], budget: int
                  ) -> tuple[list[int], list[int]]:
    """Cut a pair to `budget` tokens in all, the longer text losing tokens from its end:
    the `tokenizers` library's rule (so `pipeline(..., truncation=True)` cuts the same),
    where on a tie of halves the second text keeps the odd token."""
    if len(first) + len(second) <= budget:
        return first, second
    short, long = sorted((len(first), len(second)))
    keep_long = short if short > budget else max(short, budget - short)
    if short + keep_long > budget:
        short, keep_long = budget // 2, budget - budget // 2
    if len(first) > len(second):
        return first[:keep_long], second[:short]
    return first[:short], second[:keep_long]
