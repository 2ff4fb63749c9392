"""The sections of params.yaml for the first half of "from scratch": `pretrain` (masked
language modelling before fine-tuning) and `scratch` (the BERT and tokenizer built when
`fetch.model: scratch`)."""
from __future__ import annotations

from dataclasses import dataclass

from finetuning.config.checks import check

SCRATCH = "scratch"  # fetch.model: build a base (pretrain stage) instead of fetching one


@dataclass(frozen=True)
class Pretrain:
    """Masked language modelling on the train split's texts (and `corpus`). `steps: 0`
    passes the fetched base straight through: nothing is loaded, copied or trained."""

    steps: int = 0
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_length: int = 128
    mlm_probability: float = 0.15
    dropout: float = 0.1      # of every dropout layer while pretraining (the base keeps its own)
    corpus: str = ""          # an unlabeled source (any fetch source string); "" = none
    log_every: int = 20
    checkpoint_every: int = 200
    threads: int = 0
    seed: int = 42

    def validate(self) -> None:
        for key in ("steps", "checkpoint_every", "threads"):
            check(getattr(self, key) >= 0, f"pretrain.{key}", "an integer >= 0",
                  getattr(self, key))
        for key in ("batch_size", "log_every"):
            check(getattr(self, key) >= 1, f"pretrain.{key}", "an integer >= 1",
                  getattr(self, key))
        check(0 < self.learning_rate < 1, "pretrain.learning_rate", "a float in (0, 1)",
              self.learning_rate)
        check(self.weight_decay >= 0, "pretrain.weight_decay", "a float >= 0",
              self.weight_decay)
        check(0 <= self.warmup < 1, "pretrain.warmup", "a fraction of the steps in [0, 1)",
              self.warmup)
        check(8 <= self.max_length <= 8192, "pretrain.max_length", "an integer in [8, 8192]",
              self.max_length)
        check(0 < self.mlm_probability < 1, "pretrain.mlm_probability", "a fraction in (0, 1)",
              self.mlm_probability)
        check(0 <= self.dropout < 1, "pretrain.dropout", "a probability in [0, 1)", self.dropout)


@dataclass(frozen=True)
class Scratch:
    """The BERT built from nothing (seeded by `pretrain.seed`) and its WordPiece tokenizer,
    trained on the train split's texts only."""

    vocab_size: int = 8000
    layers: int = 4
    hidden_size: int = 256
    heads: int = 4
    intermediate_size: int = 1024
    max_positions: int = 512

    def validate(self) -> None:
        check(100 <= self.vocab_size <= 250_000, "scratch.vocab_size",
              "an integer in [100, 250000]", self.vocab_size)
        for key in ("layers", "hidden_size", "heads", "intermediate_size"):
            check(getattr(self, key) >= 1, f"scratch.{key}", "an integer >= 1",
                  getattr(self, key))
        check(self.hidden_size % self.heads == 0, "scratch.hidden_size",
              f"a multiple of scratch.heads ({self.heads})", self.hidden_size)
        check(8 <= self.max_positions <= 8192, "scratch.max_positions",
              "an integer in [8, 8192]", self.max_positions)
