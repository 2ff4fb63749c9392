"""Training checkpoints that resume exactly, and are never resumed under other settings.

A checkpoint holds model, optimizer, scheduler and grad-scaler states, the torch RNG state,
the position in the (seeded, hence reproducible) batch order and the running figures. It
carries a fingerprint of everything that shapes training; a mismatch discards it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from finetuning.config import Config
from finetuning.digest import weights_digest
from finetuning.pretraining.base import base_of

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
# Settings that do not change the numbers a run produces, so a resume may differ in them.
NEUTRAL_TRAIN_KEYS = ("checkpoint_every", "threads", "calibrate")  # calibration: after the end


def data_fingerprint(tokenized: str | Path) -> str:
    """Hash of the tokenized splits' states (each holds its content's fingerprint)."""
    states = [p.read_text() for p in sorted(Path(tokenized).glob("*/state.json"))]
    return hashlib.sha256("\n".join(states).encode()).hexdigest()[:16]


def fingerprint(cfg: Config, world_size: int) -> str:
    """Hash of the params, world size (it sets each rank's data shard and the number of
    steps), data and base model (config and weights' content) that determine training."""
    train = {k: v for k, v in asdict(cfg.train).items() if k not in NEUTRAL_TRAIN_KEYS}
    parts = [json.dumps({"train": train, "world_size": world_size,
                         "labels": cfg.prepare.labels,
                         "tensorboard": asdict(cfg.tensorboard)}, sort_keys=True),
             data_fingerprint(cfg.paths.tokenized)]
    base = base_of(cfg.paths)
    parts += [(base / "config.json").read_text(), weights_digest(base)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state entries training changes: every parameter for full fine-tuning, the
    adapters and the head for LoRA. What a checkpoint and the kept best step hold."""
    names = {name for name, param in model.named_parameters() if param.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `trainable_state`'s output; every trainable parameter must be in it."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    if unexpected or trainable & set(missing):
        raise ValueError(f"saved weights do not fit the model: missing "
                         f"{sorted(trainable & set(missing))[:3]}, unexpected "
                         f"{sorted(unexpected)[:3]}")


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> None:
    """Write `state` atomically (a kill mid-write leaves the previous checkpoint intact)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / CHECKPOINT)


def load_checkpoint(folder: str | Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint in `folder` if its fingerprint is `expected`; otherwise discard it.

    Loaded with `weights_only=True`: tensors and plain containers only, no pickled code.
    """
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: never fatal, never trusted
        log.warning("discarding unreadable checkpoint %s: %s", path, err)
        clear_checkpoints(folder)
        return None
    if state.get("fingerprint") != expected:
        log.warning("discarding checkpoint %s: made under different params, data or model "
                    "(fingerprint %s, now %s)", path, state.get("fingerprint"), expected)
        clear_checkpoints(folder)
        return None
    return state


def clear_checkpoints(folder: str | Path) -> None:
    """Empty the checkpoint folder (kept as a folder: it is a persistent DVC output)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
