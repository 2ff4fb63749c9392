"""Relaunch a stage under torch's own distributed launcher (torchrun).

`dvc repro` and the Prefect flow run `python -m stages.train` as always; when params ask
for more than one process, that process becomes the launcher: it runs torchrun with the
same command line, which starts one worker per process and, if any worker fails, stops
the others and exits non-zero (no hang on a collective).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from finetuning.config import Train
from finetuning.errors import StageError

__all__ = ["launch_distributed", "needs_launch", "record", "torchrun_command"]

log = logging.getLogger(__name__)


def needs_launch(cfg: Train) -> bool:
    """True in the parent process of a multi-process run (torchrun sets LOCAL_RANK)."""
    return (cfg.num_processes > 1 or cfg.nnodes > 1) and "LOCAL_RANK" not in os.environ


def torchrun_command(cfg: Train, argv: list[str], module: str) -> list[str]:
    """The torchrun command line that runs `python -m <module> <argv>` on every rank."""
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nproc-per-node={cfg.num_processes}", "--max-restarts=0"]
    if cfg.nnodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={cfg.nnodes}", f"--node-rank={cfg.node_rank}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint={cfg.rdzv_endpoint}"]
    return cmd + ["-m", module, *argv]


def launch_distributed(cfg: Train, module: str, argv: list[str] | None = None) -> None:
    """Run `python -m <module>` on every rank through torchrun (with this process's own
    arguments unless `argv`); raise if any rank failed."""
    cmd = torchrun_command(cfg, sys.argv[1:] if argv is None else argv, module)
    log.info("launching %d process(es) x %d node(s): %s", cfg.num_processes, cfg.nnodes,
             " ".join(cmd))
    env = dict(os.environ)
    if cfg.threads:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise StageError(f"distributed training failed (torchrun exit {result.returncode}); "
                         "the failing rank's error is shown above")
