"""Wall time of a Prefect sweep with trials at once against the same trials one at a time.

    python -m benchmarks.sweep_fanout --trials 4 --concurrency 2 \
        --json benchmarks/results/sweep_fanout-2cpu.json

On the test suite's tiny BERT and 60-row data (a throw-away git + DVC copy of this
repository, `dvc repro` once so that trials share a warm cache), through a real Prefect
server, the process work pool of prefect.yaml and one worker: a sweep of `--trials`
learning rates at `--concurrency`, then another of as many other learning rates (no
run-cache hits from the first) at concurrency 1. Each is timed from `prefect deployment
run sweep/main --watch` to its end. A trial here is mostly process start-up, git, DVC
and Prefect bookkeeping, the part concurrency overlaps best; a trial of a real model
that keeps every core busy gains less.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import (BIN, ROOT, build_tiny_model, make_repo_copy, make_sentences, run,
                            tiny_params)
from tests.prefect_helpers import migrated_database, prefect_server, worker


def tiny_repo(folder: Path) -> Path:
    """A committed tiny repository after one `dvc repro`, with prefect.yaml."""
    model = build_tiny_model(folder / "model")
    data = folder / "data"
    data.mkdir()
    make_sentences(60, seed=1).to_csv(data / "reviews.csv", index=False)
    make_sentences(20, seed=2).to_json(data / "ood.jsonl", orient="records", lines=True)
    repo = make_repo_copy(folder / "repo", tiny_params(model, data))
    shutil.copy(ROOT / "prefect.yaml", repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "reproduced"], repo)
    return repo


def timed_sweep(repo: Path, env: dict[str, str], rates: list[float], concurrency: int) -> float:
    """Seconds of one sweep over `rates`, start to end; fails if the sweep does."""
    started = time.perf_counter()
    subprocess.run([str(BIN / "prefect"), "deployment", "run", "sweep/main", "--watch",
                    "--watch-interval", "1", "-p", f"concurrency={concurrency}",
                    "-p", "grid=" + json.dumps({"train.learning_rate": rates})],
                   cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        tmp = Path(tmp)
        repo = tiny_repo(tmp)
        with prefect_server(tmp, migrated_database(tmp / "db")) as srv:
            prefect = str(BIN / "prefect")
            run([prefect, "work-pool", "create", "finetune", "--type", "process"], repo,
                env=srv.env)
            run([prefect, "deploy", "--all", "--no-prompt"], repo, env=srv.env)
            with worker(srv, "finetune", tmp, tmp / "worker.log"):
                at_once = timed_sweep(repo, srv.env, [1e-3 * (i + 1) for i in
                                                      range(args.trials)], args.concurrency)
                one_by_one = timed_sweep(repo, srv.env, [1e-3 * (i + 1.5) for i in
                                                         range(args.trials)], 1)
    figures = {"trials": args.trials, "concurrency": args.concurrency, "cpus": os.cpu_count(),
               "seconds_at_once": round(at_once, 1), "seconds_one_by_one": round(one_by_one, 1),
               "speedup": round(one_by_one / at_once, 2)}
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
