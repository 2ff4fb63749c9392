"""fetch: turn the data and model sources into `data/raw` and `models/base`.

Everything after this stage is offline. Layout written:
    <raw_data>/main/<tables>          the labelled data to split
    <raw_data>/ood/<name>/<tables>    out-of-domain evaluation sets
    <raw_data>/corpus/<tables>        pretrain.corpus, unlabeled texts (when set)
    <raw_data>/source.json            what was fetched, with archive sha256s
    <base_model>/                     a Hugging Face model folder, with the sha256 of its
                                      weights in weights.sha256 (train's resume check);
                                      for `fetch.model: scratch` a note (pretrain builds it)
"""
from __future__ import annotations

import logging

from finetuning.config import SOURCE_FILE, Config
from finetuning.data.fetching import fetch_all
from finetuning.data.sources import archive_cache
from finetuning.digest import record_weights_digest
from finetuning.outputs import stage_outputs, write_json
from finetuning.pretraining.base import is_scratch
from finetuning.stage import run_stage

log = logging.getLogger("stages.fetch")


def fetch(cfg: Config) -> None:
    """Fetch data, out-of-domain sets and model; outputs appear only if all succeed."""
    paths = cfg.paths
    with stage_outputs() as out:
        raw, model = out.dir(paths.raw_data), out.dir(paths.base_model)
        provenance = fetch_all(cfg.fetch, raw, model, archive_cache(),
                               corpus=cfg.pretrain.corpus)
        write_json(raw / SOURCE_FILE, provenance)
        if not is_scratch(model):
            record_weights_digest(model)
    log.info("fetched data into %s and model into %s", paths.raw_data, paths.base_model)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.fetch`)."""
    run_stage("fetch", __doc__.splitlines()[0], fetch, argv, offline=False)


if __name__ == "__main__":
    main()
