"""Relaunch a stage under torch's own distributed launcher (torchrun).

`dvc repro` and the Prefect flow run `python -m stages.train` as always; when the
topology asks for more than one process, that process becomes the launcher: it runs
torchrun with the same command line, which starts one worker per process and, if any
worker fails, stops the others and exits non-zero (no hang on a collective).

The topology (processes per node, nodes, this node's rank, node 0's address) describes
machines, not an experiment, so it is not in params.yaml (params would differ between the
nodes of one run): it comes from the command line or from torchrun's own environment
variables (PET_NPROC_PER_NODE, PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR,
PET_MASTER_PORT), which `dvc repro` passes through to the stage.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

from torch.distributed.argparse_util import env
from torch.distributed.elastic.multiprocessing.errors import record

from finetuning.errors import StageError

__all__ = ["Topology", "add_topology_options", "launch_distributed", "needs_launch", "record",
           "torchrun_command"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topology:
    """Where a run's processes are."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Topology:
        """The topology `add_topology_options` parsed, checked."""
        topology = cls(args.nproc_per_node, args.nnodes, args.node_rank, args.master_addr,
                       args.master_port)
        for key in ("nproc_per_node", "nnodes"):
            if getattr(topology, key) < 1:
                raise StageError(f"--{key.replace('_', '-')} (PET_{key.upper()}) must be >= 1,"
                                 f" got {getattr(topology, key)}")
        if not 0 <= topology.node_rank < topology.nnodes:
            raise StageError(f"--node-rank (PET_NODE_RANK) must be in [0, {topology.nnodes}) "
                             f"for --nnodes {topology.nnodes}, got {topology.node_rank}")
        return topology


def add_topology_options(parser: argparse.ArgumentParser) -> None:
    """torchrun's own topology options, with its PET_* environment variables as defaults."""
    group = parser.add_argument_group(
        "topology", "where the run's processes are (each also read from torchrun's PET_* "
        "variable, e.g. PET_NPROC_PER_NODE=2 dvc repro)")
    group.add_argument("--nproc-per-node", action=env, type=int, default=1,
                       help="processes on this machine, one per GPU (default: %(default)s)")
    group.add_argument("--nnodes", action=env, type=int, default=1,
                       help="machines in the run (default: %(default)s)")
    group.add_argument("--node-rank", action=env, type=int, default=0,
                       help="this machine's place, 0..nnodes-1; node 0 writes every output "
                       "(default: %(default)s)")
    group.add_argument("--master-addr", action=env, default="127.0.0.1",
                       help="address of node 0, reachable from every node "
                       "(default: %(default)s)")
    group.add_argument("--master-port", action=env, type=int, default=29500,
                       help="free port on node 0 (default: %(default)s)")


def needs_launch(topology: Topology) -> bool:
    """True in the parent process of a multi-process run (torchrun sets LOCAL_RANK)."""
    return topology.world_size > 1 and "LOCAL_RANK" not in os.environ


def torchrun_command(topology: Topology, argv: list[str], module: str) -> list[str]:
    """The torchrun command line that runs `python -m <module> <argv>` on every rank.

    Several nodes meet by torchrun's static rendezvous at node 0's address: the global
    ranks follow the node ranks, so global rank 0, the one that writes the outputs, is
    on node 0, where `dvc repro` expects them."""
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nproc-per-node={topology.nproc_per_node}", "--max-restarts=0"]
    if topology.nnodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={topology.nnodes}", f"--node-rank={topology.node_rank}",
                "--rdzv-backend=static", f"--master-addr={topology.master_addr}",
                f"--master-port={topology.master_port}"]
    return cmd + ["-m", module, *argv]


def launch_distributed(topology: Topology, module: str, argv: list[str],
                       threads: int = 0) -> None:
    """Run `python -m <module> <argv>` on every rank through torchrun; raise if any rank
    failed."""
    cmd = torchrun_command(topology, argv, module)
    log.info("launching %d process(es) on node %d of %d: %s", topology.nproc_per_node,
             topology.node_rank, topology.nnodes, " ".join(cmd))
    child_env = dict(os.environ)
    if threads:
        child_env["OMP_NUM_THREADS"] = str(threads)
    result = subprocess.run(cmd, env=child_env)
    if result.returncode != 0:
        raise StageError(f"distributed training failed (torchrun exit {result.returncode}); "
                         "the failing rank's error is shown above")
