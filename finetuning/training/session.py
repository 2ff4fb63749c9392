"""One training run from start to finish: data, model and monitor assembled (resuming a
checkpoint when one fits), the loop run, every split scored at the end, the model saved."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from finetuning.config import Config
from finetuning.data.batching import load_splits
from finetuning.data.prepared import read_texts
from finetuning.data.tokenizer import load_tokenizer
from finetuning.inference.model import load_classifier, predict_logits, score_splits
from finetuning.monitoring.monitor import Monitor
from finetuning.monitoring.writer import MetricsWriter
from finetuning.outputs import atomic_dir
from finetuning.provenance import hardware
from finetuning.training.checkpoint import fingerprint, load_checkpoint
from finetuning.training.loop import Trainer
from finetuning.training.runtime import Runtime, quiet_unless_main

log = logging.getLogger(__name__)


def build_trainer(cfg: Config, runtime: Runtime) -> tuple[Trainer, PreTrainedTokenizerBase]:
    """Data, model (same initial weights on every rank), monitor and trainer."""
    paths = cfg.paths
    quiet_unless_main(runtime)
    torch.manual_seed(cfg.train.seed)
    splits = load_splits(paths.tokenized)
    tokenizer = load_tokenizer(paths.base_model)
    model = load_classifier(paths.base_model, cfg.prepare.labels).to(runtime.device)
    torch.manual_seed(cfg.train.seed + runtime.rank)  # each rank its own dropout masks
    texts = read_texts(paths.prepared, "validation")
    state = load_checkpoint(paths.checkpoints, fingerprint(cfg)) if runtime.is_main else None
    if runtime.distributed:  # every rank resumes from rank 0's decision
        box = [state]
        torch.distributed.broadcast_object_list(box, src=0)
        state = box[0]
    resuming = state is not None
    if runtime.is_main and not resuming:  # a fresh run starts a fresh log
        shutil.rmtree(paths.tensorboard, ignore_errors=True)
    writer = MetricsWriter(paths.tensorboard, enabled=runtime.is_main,
                           purge_step=state["progress"]["step"] + 1 if resuming else None)
    trainer = Trainer(cfg, runtime, model, splits, tokenizer.pad_token_id,
                      Monitor(writer, cfg, texts))
    if resuming:
        trainer.resume(state)
    return trainer, tokenizer


def run_training(trainer: Trainer) -> dict:
    """Train to the end, score every split (rank 0), close the log; the run's figures."""
    cfg, runtime, module = trainer.cfg, trainer.runtime, trainer.module
    log.info("training %s (%.1fM parameters) on %s x%d, %s, %d steps", cfg.paths.base_model,
             module.num_parameters() / 1e6, runtime.device, runtime.world_size,
             cfg.train.precision, trainer.total)
    try:
        summary = trainer.fit()
        if runtime.is_main:
            final_evaluation(trainer)
    finally:
        trainer.monitor.writer.close()
    summary.update(num_parameters=module.num_parameters(), device=runtime.device.type,
                   world_size=runtime.world_size, precision=cfg.train.precision,
                   hardware=hardware())
    return summary


def final_evaluation(trainer: Trainer) -> None:
    """Every split's scores at the last step, HParams, and projector embeddings."""
    cfg, device, tb = trainer.cfg, trainer.runtime.device, trainer.cfg.tensorboard
    batch_size = cfg.evaluate.batch_size
    others = {name: split for name, split in trainer.splits.items()
              if name not in ("train", "validation")}  # fit validated at the last step
    scored = score_splits(trainer.module, others, batch_size, trainer.pad_id, device, trainer.amp)
    reports = {"validation": trainer.progress.validation,
               **{name: report for name, (_, report) in scored.items()}}
    trainer.monitor.final(trainer.progress.step, reports)
    if tb.embeddings:
        val = trainer.splits["validation"]
        rows = np.random.default_rng(cfg.train.seed).permutation(len(val))[:tb.embeddings]
        logits, vectors = predict_logits(trainer.module, val.subset(rows), batch_size,
                                         trainer.pad_id, device, trainer.amp, embeddings=True)
        trainer.monitor.embeddings(trainer.progress.step, vectors, val.labels[rows],
                                   logits.argmax(-1).numpy(), rows)


def save_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
               target: str | Path, max_length: int) -> None:
    """Write a HF folder (safetensors weights, config with id2label, tokenizer) atomically.

    The tokenizer records the training truncation as its `model_max_length`, so whoever
    loads the folder (`finetune predict`, `pipeline(..., truncation=True)`) cuts texts
    where training did."""
    tokenizer.model_max_length = max_length
    with atomic_dir(target) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
