"""baseline: TF-IDF + logistic regression on the prepared splits, scored like evaluate.

Reads `<prepared>/*.parquet`; writes `metrics/baseline.json` (a DVC metric) with the
nesting of `metrics/eval.json`: {"validation": .., "test": .., "ood": {"<set>": ..}}.
It runs in seconds and tells whether fine-tuning earns its cost.
"""
from __future__ import annotations

import logging
import time

from finetuning.baseline import baseline_results
from finetuning.config import Config
from finetuning.data.prepared import read_prepared
from finetuning.metrics import nest_results
from finetuning.outputs import write_json
from finetuning.stage import run_stage

log = logging.getLogger("stages.baseline")


def baseline(cfg: Config) -> None:
    """Read the prepared splits, fit, score, write metrics/baseline.json."""
    started = time.perf_counter()
    results = baseline_results(read_prepared(cfg.paths.prepared), cfg.baseline,
                               len(cfg.prepare.labels))
    write_json(cfg.paths.baseline_metrics, nest_results(results))
    for name, result in results.items():
        log.info("%s: %s", name, {k: round(v, 4) for k, v in result.items()})
    log.info("baseline fitted and scored in %.1f s", time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.baseline`)."""
    run_stage("baseline", __doc__.splitlines()[0], baseline, argv)


if __name__ == "__main__":
    main()
