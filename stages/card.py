"""card: the deliverable model folder: the trained model, its drift reference and a model
card (README.md in the Hugging Face layout).

Reads `<trained>`, `<predictions>/drift_reference.json`, the base model's own card (for
its language and license) and every stage's records; writes `<finetuned>`, which
`transformers.pipeline`, `finetune predict` and `finetune serve` load, and which can be
pushed to the Hub as it is.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from finetuning.config import Config
from finetuning.monitoring.drift import copy_reference
from finetuning.outputs import atomic_dir
from finetuning.reporting.card import model_card
from finetuning.reporting.records import load_records, require, run_commit
from finetuning.stage import run_stage

log = logging.getLogger("stages.card")


def card(cfg: Config) -> None:
    """Copy the trained model and its reference, write the card beside them."""
    paths = cfg.paths
    require([paths.trained], "model card")
    records = load_records(paths, "model card")
    commit = run_commit(paths)
    with atomic_dir(paths.finetuned) as out:
        shutil.copytree(paths.trained, out, dirs_exist_ok=True)
        copy_reference(Path(paths.predictions), out)
        text = model_card(records, cfg, Path(paths.finetuned).as_posix(), commit)
        (out / "README.md").write_text(text, encoding="utf-8")
    log.info("wrote %s with its model card", paths.finetuned)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.card`)."""
    run_stage("card", __doc__.splitlines()[0], card, argv)


if __name__ == "__main__":
    main()
