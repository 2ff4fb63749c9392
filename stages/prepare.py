"""prepare: normalise raw tables to (text, label), clean them, and split them.

Reads `<raw_data>/main` and `<raw_data>/ood/<name>` (fetch's layout); writes
`<prepared>/<split>.parquet` (train, validation, test, ood_<name>) and the counts in
`metrics/prepare.json`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from finetuning.config import Config
from finetuning.data.prepared import write_splits
from finetuning.data.splits import prepare_splits
from finetuning.outputs import stage_outputs
from finetuning.stage import run_stage

log = logging.getLogger("stages.prepare")


def prepare(cfg: Config) -> None:
    """Read raw data, write the prepared splits and their counts."""
    splits, summary = prepare_splits(Path(cfg.paths.raw_data), cfg.prepare)
    with stage_outputs() as out:  # the splits and their counts land together
        write_splits(splits, out.dir(cfg.paths.prepared))
        out.json(cfg.paths.prepare_metrics, summary)
    log.info("prepared splits: %s", summary["rows"])


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.prepare`)."""
    run_stage("prepare", __doc__.splitlines()[0], prepare, argv)


if __name__ == "__main__":
    main()
