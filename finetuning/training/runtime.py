"""Where training runs: device, precision, and the DDP process group.

Under `torchrun` the launcher sets RANK / WORLD_SIZE / LOCAL_RANK; without it this is a
single process. The same code path serves a laptop CPU and a multi-node GPU job.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

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
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size)


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
    """Leave the process group cleanly."""
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def autocast(runtime: Runtime, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for forward passes; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(runtime.device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(runtime: Runtime, precision: str) -> torch.amp.GradScaler:
    """Loss scaling, needed only by fp16 (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(runtime.device.type, enabled=precision == "fp16")
