"""What TensorBoard logging costs: training wall time with every group on (the params'
intervals) over the same training with logging off, on the pipeline's data and model.

    python -m benchmarks.logging_overhead --repeats 3

"Off" still writes the epoch's last-step train scalars, the validation scalars and the
config text once per epoch (a handful of events): the ratio is what the params'
intervals add on top of that.

Needs `make repro` (or `dvc repro tokenize`) to have produced data/tokenized and
models/base. Runs alternate on/off so drift in machine load hits both alike.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from finetuning.config import Config, Tensorboard, load_config
from finetuning.training.runtime import init_runtime
from finetuning.training.session import build_trainer, project

log = logging.getLogger("benchmarks.logging_overhead")

OFF = Tensorboard(log_every=10**9, histogram_every=0, weight_histograms=False, pr_curves=False,
                  confusion_matrix=False, mistakes=0, embeddings=0, hparams=False)


def timed_run(cfg: Config, workdir: Path, logging_on: bool) -> tuple[float, float]:
    """(fit seconds, fit + projector embeddings seconds) of one training run."""
    paths = replace(cfg.paths, tensorboard=str(workdir / "tb"),
                    checkpoints=str(workdir / "ckpt"))
    cfg = replace(cfg, paths=paths, train=replace(cfg.train, checkpoint_every=0),
                  tensorboard=cfg.tensorboard if logging_on else OFF)
    trainer, _ = build_trainer(cfg, init_runtime(cfg.train.threads))
    start = time.perf_counter()
    trainer.fit()
    fit = time.perf_counter() - start
    if logging_on:
        project(trainer)
    trainer.monitor.writer.close()
    return fit, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Alternate logging-on / logging-off runs and print the median wall-time ratio."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.logging_overhead",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs per run (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(args.params)
    cfg = replace(cfg, train=replace(cfg.train, epochs=args.epochs))
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for logging_on in (True, False) if repeat % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                times[logging_on].append(timed_run(cfg, Path(tmp), logging_on))
            log.info("run %d logging %s: fit %.1f s", repeat, "on" if logging_on else "off",
                     times[logging_on][-1][0])
    on = statistics.median(t[0] for t in times[True])
    off = statistics.median(t[0] for t in times[False])
    on_total = statistics.median(t[1] for t in times[True])
    print(f"training wall time, median of {args.repeats}: logging on {on:.1f} s, off {off:.1f} s,"
          f" ratio on/off {on / off:.3f}")
    print(f"with the projector's embeddings at the end: {on_total:.1f} s "
          f"({on_total / off:.3f} x off)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
