"""tokenize: turn every prepared split into token ids, once, with the base model's fast
tokenizer (truncation at `tokenize.max_length`, by `tokenize.truncation`; no padding).

Reads `<prepared>/*.parquet` and the tokenizer of the base (`<pretrained>`, or
`<base_model>` when pretrain passed it through); writes the DatasetDict
`<tokenized>` and the length statistics in `metrics/tokenize.json`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from finetuning.config import Config
from finetuning.data.tokenization import check_max_length, length_stats, tokenize_splits
from finetuning.data.tokenizer import load_tokenizer
from finetuning.data.truncation import truncation_of
from finetuning.outputs import stage_outputs
from finetuning.pretraining.base import base_of
from finetuning.stage import run_stage

log = logging.getLogger("stages.tokenize")


def tokenize(cfg: Config) -> None:
    """Tokenize the prepared splits and record their length statistics."""
    base = base_of(cfg.paths)
    check_max_length(cfg.tokenize.max_length, base)
    tokenizer = load_tokenizer(base)
    splits = tokenize_splits(Path(cfg.paths.prepared), tokenizer, truncation_of(cfg.tokenize))
    stats = {name: length_stats(split) for name, split in splits.items()}
    with stage_outputs() as out:  # the splits and their statistics land together
        splits.save_to_disk(str(out.dir(cfg.paths.tokenized)))
        out.json(cfg.paths.tokenize_metrics, stats)
    log.info("tokenized %s", {name: s["rows"] for name, s in stats.items()})


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.tokenize`)."""
    run_stage("tokenize", __doc__.splitlines()[0], tokenize, argv)


if __name__ == "__main__":
    main()
