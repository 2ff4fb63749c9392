"""pretrain: masked language modelling of the base on the train split's texts (and
`pretrain.corpus`), or a base built from scratch, before tokenize.

Reads `<base_model>` (fetched; a scratch note when `fetch.model: scratch`),
`<prepared>/train.parquet` and `<raw_data>/corpus`; writes `<pretrained>`: the base that
tokenize and train use (a model folder; with `pretrain.steps: 0` on a fetched base only a
pointer to it, at no cost), the run's figures in `metrics/pretrain.json`, its curves
(`pretrain/loss`, `pretrain/masked_accuracy`, `pretrain/perplexity`,
`pretrain/learning_rate`) in `<pretrain_tensorboard>`, and resumable checkpoints in
`<pretrain_checkpoints>` while it runs.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from finetuning.config import Config
from finetuning.outputs import stage_outputs
from finetuning.pretraining.base import is_scratch, write_pointer
from finetuning.stage import run_stage

log = logging.getLogger("stages.pretrain")


def pretrain(cfg: Config) -> None:
    """Pass the fetched base through, or build and/or pretrain one."""
    paths = cfg.paths
    if cfg.pretrain.steps or is_scratch(paths.base_model):
        from finetuning.pretraining.run import run_pretraining  # torch only when it trains

        run_pretraining(cfg)
        return
    with stage_outputs() as out:
        write_pointer(out.dir(paths.pretrained), Path(paths.base_model))
        out.json(paths.pretrain_metrics, {"steps": 0})
    for folder in (paths.pretrain_tensorboard, paths.pretrain_checkpoints):
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True)
    log.info("pretrain.steps is 0: %s is the base, as fetched", paths.base_model)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.pretrain`)."""
    run_stage("pretrain", __doc__.splitlines()[0], pretrain, argv)


if __name__ == "__main__":
    main()
