"""Where training runs: device, precision, and the DDP process group.

Under `torchrun` the launcher sets RANK / WORLD_SIZE / LOCAL_RANK; without it this is a
single process. The same code path serves a laptop CPU and a multi-node GPU job.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import faulthandler
import logging
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from finetuning.errors import StageError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """This process's place in the job."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes logs, checkpoints and the model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when gradients are all-reduced across processes."""
        return self.world_size > 1


def init_runtime(threads: int = 0) -> Runtime:
    """Pick the device and join the process group if launched by torchrun."""
    if threads:
        torch.set_num_threads(threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        use_tf32()
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        # `kill -USR1 <pid>` prints where a rank is (all threads), e.g. when a run seems
        # stuck; a collective that waits longer than FINETUNE_DIST_TIMEOUT seconds fails.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        die_with_launcher()
        timeout = dist_timeout()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout))
    return Runtime(device, rank, world_size)


def die_with_launcher() -> None:
    """On Linux, a rank never outlives the torchrun agent that started it: torchrun stops
    its workers on SIGTERM, but a SIGKILLed agent cannot, and its workers (each in its own
    session) would train on unseen, writing outputs under a resumed run's feet."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the agent died before prctl took effect
        os._exit(1)


def dist_timeout() -> float:
    """Seconds a collective may wait (FINETUNE_DIST_TIMEOUT; torch's 30 minutes if unset)."""
    value = os.environ.get("FINETUNE_DIST_TIMEOUT", "1800")
    try:
        return float(value)
    except ValueError:
        raise StageError(f"FINETUNE_DIST_TIMEOUT={value!r}: expected a number of seconds") \
            from None


def quiet_unless_main(runtime: Runtime) -> None:
    """One voice: rank 0 logs progress, the other ranks only warnings."""
    if not runtime.is_main:
        import transformers

        logging.getLogger().setLevel(logging.WARNING)
        transformers.logging.set_verbosity_error()


def use_tf32() -> None:
    """TF32 matmuls: ~free speed on Ampere+, irrelevant precision for fine-tuning."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def shutdown(runtime: Runtime) -> None:
    """Leave the process group cleanly, after a successful run only (a failing rank just
    exits, and torchrun stops the others). The barrier first: a rank that tears down the
    gloo group a moment after its last collective can deadlock (the gloo worker thread,
    freeing that collective's tensors, waits for the GIL the tearing-down thread holds
    while it joins the worker), so nothing may still be in flight."""
    if runtime.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def autocast(runtime: Runtime, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for forward passes; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(runtime.device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(runtime: Runtime, precision: str) -> torch.amp.GradScaler:
    """Loss scaling, needed only by fp16 (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(runtime.device.type, enabled=precision == "fp16")
