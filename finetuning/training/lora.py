"""LoRA through peft (`train.method: lora`): low-rank adapters on the encoder's
`train.lora.target_modules`, the classification head trained fully, and the pooler too
when the base checkpoint has none (a masked-LM checkpoint: with adapters on query/value
alone its pooler would stay random and frozen). After training the adapter is saved
beside the model and merged into it, so evaluate, export and `transformers.pipeline` see
a plain Hugging Face folder."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from finetuning.config import Lora
from finetuning.pretraining.base import has_trained_pooler

log = logging.getLogger(__name__)

ADAPTER_FOLDER = "adapter"  # in the trained folder: adapter_config.json + its weights


def with_lora(model: torch.nn.Module, lora: Lora, base_folder: str | Path) -> PeftModel:
    """`model` with adapters: only they, the head (and an untrained pooler) train."""
    pooler = any(name.endswith("pooler") for name, _ in model.named_modules())
    extra = ["pooler"] if pooler and not has_trained_pooler(base_folder) else []
    targets = lora.target_modules
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha,
                        lora_dropout=lora.dropout, modules_to_save=extra or None,
                        target_modules="all-linear" if targets == ["all-linear"] else targets)
    model = get_peft_model(model, config)
    log.info("LoRA r=%d on %s%s: %d of %d parameters train", lora.r, targets,
             " (and the untrained pooler)" if extra else "", trainable_parameters(model),
             sum(p.numel() for p in model.parameters()))
    return model


def trainable_parameters(model: torch.nn.Module) -> int:
    """How many parameters the optimizer updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model: torch.nn.Module, out: Path) -> torch.nn.Module:
    """For a LoRA model: save the adapter into `out/adapter` and return the base with the
    adapter merged in (a plain transformers model); any other model as it is."""
    if not isinstance(model, PeftModel):
        return model
    model.save_pretrained(out / ADAPTER_FOLDER)
    return model.merge_and_unload()


def adapter_size_mb(folder: str | Path) -> float | None:
    """Size of the saved adapter's weights, None without one."""
    weights = list((Path(folder) / ADAPTER_FOLDER).glob("*.safetensors"))
    return round(sum(w.stat().st_size for w in weights) / 2**20, 3) if weights else None
