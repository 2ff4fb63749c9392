"""train: fine-tune the base model on the tokenized train split.

AdamW with linear warmup and decay, gradient clipping and accumulation, length-grouped
batches padded per batch, optional mixed precision and DDP (under torchrun). Writes the
fine-tuned HF folder, tensorboardX logs and a JSON of run figures.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from stages.batching import (TokenizedSplit, iterate_batches, length_grouped_batches,
                             load_splits, shard_batches)
from stages.cli import run_stage
from stages.config import Config, Train
from stages.errors import StageError
from stages.inference import classification_report, load_classifier, predict_logits
from stages.metrics import RunningMetrics
from stages.outputs import atomic_dir, write_json
from stages.runtime import Runtime, autocast, grad_scaler, init_runtime, shutdown
from stages.schedule import (accumulation, build_optimizer, steps_per_epoch,
                             warmup_linear_decay)
from stages.tblog import MetricsWriter
from stages.tokenize import load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class Optim:
    """Everything that changes parameters, bundled so train_step stays short."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    max_grad_norm: float


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], optim: Optim,
               amp: contextlib.AbstractContextManager, scale: float, update: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Forward + backward on one micro-batch; step the optimizer when `update`.

    Returns (loss, logits, gradient norm before clipping or None), all on the device.
    Under DDP, gradients are all-reduced only on the update micro-batch (`no_sync`).
    """
    sync = contextlib.nullcontext()
    if isinstance(model, DistributedDataParallel) and not update:
        sync = model.no_sync()
    with sync:
        with amp:
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits.float(), batch["labels"])
        optim.scaler.scale(loss * scale).backward()
    if not update:
        return loss, logits, None
    optim.scaler.unscale_(optim.optimizer)
    max_norm = optim.max_grad_norm or float("inf")  # inf: measure the norm, clip nothing
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optim.scaler.step(optim.optimizer)
    optim.scaler.update()
    optim.scheduler.step()
    optim.optimizer.zero_grad(set_to_none=True)
    return loss, logits, grad_norm


@dataclass
class Window:
    """Training figures between two log steps: metrics on the device, counts on the host."""

    metrics: RunningMetrics
    grad_norm: torch.Tensor
    updates: int = 0
    samples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss, logits, batch, grad_norm) -> None:
        """Account one micro-batch (no host sync)."""
        self.metrics.update(loss, logits, batch["labels"])
        self.samples += batch["input_ids"].shape[0]
        self.padded_tokens += batch["input_ids"].numel()
        if grad_norm is not None:
            self.grad_norm += grad_norm.detach().float()
            self.updates += 1

    def add_tokens(self, real: int) -> None:
        """Unpadded tokens of the micro-batch, known on the host from the lengths."""
        self.real_tokens += real

    def flush(self, runtime: Runtime) -> dict[str, float]:
        """Figures of the window over all ranks (the one host sync), then reset."""
        seconds = time.perf_counter() - self.started
        counts = torch.tensor([self.samples, self.real_tokens, self.padded_tokens],
                              dtype=torch.float64, device=runtime.device)
        grad_norm = self.grad_norm.clone()
        if runtime.distributed:
            torch.distributed.all_reduce(counts)
        samples, real, padded = counts.tolist()
        out = self.metrics.compute()
        out = {"loss": out["loss"], "accuracy": out["accuracy"],
               "grad_norm": grad_norm.item() / max(1, self.updates),
               "samples_per_second": samples / seconds, "tokens_per_second": real / seconds,
               "padding_efficiency": real / padded if padded else 1.0}
        self.metrics.reset()
        self.grad_norm.zero_()
        self.updates = self.samples = self.real_tokens = self.padded_tokens = 0
        self.started = time.perf_counter()
        return out


def log_histograms(writer: MetricsWriter, batch: dict[str, torch.Tensor],
                   logits: torch.Tensor, step: int) -> None:
    """The tutorial's histograms of one batch: inputs, mask, logits, targets."""
    writer.histograms({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                       "logits": logits, "targets": batch["labels"]}, step)


def validate(model: torch.nn.Module, split: TokenizedSplit, cfg: Train, runtime: Runtime,
             pad_id: int, num_labels: int) -> dict[str, float]:
    """Loss and scores on the validation split (every rank computes them: cheap, no sync)."""
    logits = predict_logits(model, split, cfg.batch_size * 4, pad_id, runtime.device,
                            autocast(runtime, cfg.precision))
    return classification_report(logits, split.labels, num_labels)


def fit(model: torch.nn.Module, splits: dict[str, TokenizedSplit], cfg: Train,
        runtime: Runtime, writer: MetricsWriter, pad_id: int, num_labels: int) -> dict:
    """The epoch loop: it only calls train_step, logging and validation."""
    train_split, val_split = splits["train"], splits["validation"]
    first = shard_batches(length_grouped_batches(train_split.lengths, cfg.batch_size, cfg.seed, 0),
                          runtime.rank, runtime.world_size)
    if not first:
        raise StageError(f"train split has {len(train_split)} rows: too few for batch_size "
                         f"{cfg.batch_size} on {runtime.world_size} process(es)")
    total = steps_per_epoch(len(first), cfg.grad_accum_steps) * cfg.epochs
    optimizer = build_optimizer(model, cfg.learning_rate, cfg.weight_decay, runtime.device)
    optim = Optim(optimizer, torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear_decay(total, cfg.warmup)),
        grad_scaler(runtime, cfg.precision), cfg.max_grad_norm)
    module = model
    if runtime.distributed:
        model = DistributedDataParallel(model)
    amp = autocast(runtime, cfg.precision)
    window = Window(RunningMetrics(num_labels, runtime.device),
                    torch.zeros((), device=runtime.device))
    step, started, last, val = 0, time.perf_counter(), {}, {}
    samples = real_tokens = 0
    progress = tqdm(total=total, desc="train", unit="step", disable=not runtime.is_main)
    for epoch in range(cfg.epochs):
        batches = first if epoch == 0 else shard_batches(
            length_grouped_batches(train_split.lengths, cfg.batch_size, cfg.seed, epoch),
            runtime.rank, runtime.world_size)
        for index, batch in enumerate(iterate_batches(train_split, batches, pad_id,
                                                      runtime.device)):
            update, scale = accumulation(index, len(batches), cfg.grad_accum_steps)
            loss, logits, grad_norm = train_step(model, batch, optim, amp, scale, update)
            window.add(loss, logits, batch, grad_norm)
            real = int(train_split.lengths[batches[index]].sum())
            window.add_tokens(real)
            samples, real_tokens = samples + len(batches[index]), real_tokens + real
            if not update:
                continue
            step += 1
            progress.update()
            if step % cfg.log_every == 0 or step == total:
                last = window.flush(runtime)
                last["learning_rate"] = optim.scheduler.get_last_lr()[0]
                writer.scalars(last, step, "train/")
                progress.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}")
            if cfg.histogram_every and step % cfg.histogram_every == 0:
                log_histograms(writer, batch, logits, step)
            at_epoch_end = index == len(batches) - 1
            if (cfg.eval_every and step % cfg.eval_every == 0) or (
                    at_epoch_end and (not cfg.eval_every or step == total)):
                val = validate(module, val_split, cfg, runtime, pad_id, num_labels)
                writer.scalars({k: v for k, v in val.items() if k != "count"}, step, "eval/")
                log.info("step %d/%d validation %s", step, total,
                         {k: round(v, 4) for k, v in val.items()})
        writer.scalars({"epoch": epoch + 1}, step, "train/")
    progress.close()
    wall = time.perf_counter() - started
    world = runtime.world_size
    return {"steps": step, "epochs": cfg.epochs, "wall_seconds": round(wall, 2),
            "samples_per_second": round(samples * world / wall, 2),
            "tokens_per_second": round(real_tokens * world / wall, 1),
            "final_train_loss": last.get("loss"), "final_train_accuracy": last.get("accuracy"),
            "validation": val}


def save_model(model: torch.nn.Module, tokenizer, target: str | Path) -> None:
    """Write a HF folder (safetensors weights, config with id2label, tokenizer) atomically."""
    with atomic_dir(target) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)


def train(cfg: Config) -> None:
    """Stage body: load data and model, fit, save model and figures."""
    tcfg, paths = cfg.train, cfg.paths
    runtime = init_runtime(tcfg.threads)
    try:
        torch.manual_seed(tcfg.seed)
        np.random.seed(tcfg.seed)
        splits = load_splits(paths.tokenized)
        tokenizer = load_tokenizer(paths.base_model)
        model = load_classifier(paths.base_model, cfg.prepare.labels).to(runtime.device)
        if runtime.is_main:  # a fresh run starts a fresh log: no interleaved old steps
            shutil.rmtree(paths.tensorboard, ignore_errors=True)
        writer = MetricsWriter(paths.tensorboard, enabled=runtime.is_main)
        log.info("training %s (%.1fM parameters) on %s x%d, %s", paths.base_model,
                 model.num_parameters() / 1e6, runtime.device, runtime.world_size,
                 tcfg.precision)
        try:
            summary = fit(model, splits, tcfg, runtime, writer, tokenizer.pad_token_id,
                          len(cfg.prepare.labels))
        finally:
            writer.close()
        if runtime.is_main:
            save_model(model, tokenizer, paths.finetuned)
            summary.update(num_parameters=model.num_parameters(), device=runtime.device.type,
                           world_size=runtime.world_size, precision=tcfg.precision)
            write_json(paths.train_metrics, summary)
    finally:
        shutdown(runtime)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.train`)."""
    run_stage("train", __doc__.splitlines()[0], train, argv)


if __name__ == "__main__":
    main()
