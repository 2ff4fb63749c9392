"""train: fine-tune the base model on the tokenized train split.

AdamW with linear warmup and decay, gradient clipping and accumulation, length-grouped
batches padded per batch, mixed precision, resumable checkpoints, and DDP: with
`train.num_processes > 1` the stage relaunches itself under torchrun. Writes the
fine-tuned HF folder, tensorboardX logs and a JSON of run figures.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import transformers
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from stages.batching import (TokenizedSplit, iterate_batches, length_grouped_batches,
                             load_splits, shard_batches)
from stages.checkpoint import clear_checkpoints, fingerprint, load_checkpoint, save_checkpoint
from stages.cli import run_stage
from stages.config import Config
from stages.errors import StageError
from stages.inference import classification_report, load_classifier, predict_logits
from stages.launch import launch_distributed, needs_launch, record
from stages.metrics import RunningMetrics
from stages.monitor import Monitor
from stages.outputs import atomic_dir, write_json
from stages.provenance import hardware
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
    Gradients are left in place after an update (for histograms); the caller zeroes them.
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
    return loss, logits, grad_norm


@dataclass
class Window:
    """Training figures between two log steps: sums on the device, counts on the host."""

    metrics: RunningMetrics
    grad_norm: torch.Tensor
    first_bad_step: torch.Tensor  # first step with a non-finite loss, -1 if none
    updates: int = 0
    samples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def create(cls, num_labels: int, device: torch.device) -> Window:
        """An empty window on `device`."""
        return cls(RunningMetrics(num_labels, device), torch.zeros((), device=device),
                   torch.full((), -1, dtype=torch.int64, device=device))

    def add(self, step: int, loss, logits, batch, grad_norm, real_tokens: int) -> None:
        """Account one micro-batch (no host sync)."""
        self.metrics.update(loss, logits, batch["labels"])
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad_step < 0)
        self.first_bad_step.masked_fill_(bad, step)
        self.samples += batch["input_ids"].shape[0]
        self.padded_tokens += batch["input_ids"].numel()
        self.real_tokens += real_tokens
        if grad_norm is not None:
            self.grad_norm += grad_norm.detach().float()
            self.updates += 1

    def check_finite(self, step: int, cfg: Config, checkpoint_step: int | None) -> None:
        """Stop with a useful message if a loss went NaN/inf (a host sync)."""
        bad = int(self.first_bad_step.item())
        if bad < 0:
            return
        kept = (f"the last good checkpoint (step {checkpoint_step}) is kept in "
                f"{cfg.paths.checkpoints}" if checkpoint_step else "no checkpoint was made yet")
        raise StageError(f"non-finite loss at step {bad + 1} (seen at step {step}); {kept}. "
                         f"Likely causes: train.learning_rate={cfg.train.learning_rate} too high, "
                         f"or train.precision={cfg.train.precision} overflowing (fp16: try "
                         "bf16 or fp32)")

    def flush(self, runtime: Runtime) -> dict[str, float]:
        """Figures of the window over all ranks (the one host sync), then reset."""
        seconds = time.perf_counter() - self.started
        counts = torch.tensor([self.samples, self.real_tokens, self.padded_tokens],
                              dtype=torch.float64, device=runtime.device)
        if runtime.distributed:
            torch.distributed.all_reduce(counts)
        samples, real, padded = counts.tolist()
        scores = self.metrics.compute()
        out = {"loss": scores["loss"], "accuracy": scores["accuracy"],
               "grad_norm": self.grad_norm.item() / max(1, self.updates),
               "samples_per_second": samples / seconds, "tokens_per_second": real / seconds,
               "padding_efficiency": real / padded if padded else 1.0}
        self.metrics.reset()
        self.grad_norm.zero_()
        self.updates = self.samples = self.real_tokens = self.padded_tokens = 0
        self.started = time.perf_counter()
        return out

    def state_dict(self) -> dict:
        """Running sums, for a checkpoint taken between log steps."""
        return {"loss_sum": self.metrics.loss_sum, "confusion": self.metrics.confusion,
                "grad_norm": self.grad_norm, "counts": [self.updates, self.samples,
                                                        self.real_tokens, self.padded_tokens]}

    def load_state_dict(self, state: dict) -> None:
        """Restore running sums saved by `state_dict`."""
        self.metrics.loss_sum.copy_(state["loss_sum"])
        self.metrics.confusion.copy_(state["confusion"])
        self.grad_norm.copy_(state["grad_norm"])
        self.updates, self.samples, self.real_tokens, self.padded_tokens = state["counts"]


@dataclass
class Progress:
    """Where training is: enough, with the seeded batch order, to resume exactly."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0  # next micro-batch of `epoch`
    samples: int = 0
    real_tokens: int = 0
    train_seconds: float = 0.0
    checkpoint_step: int = 0
    last: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)


class Trainer:
    """The loop and what sits beside it: logging, validation, checkpoints."""

    def __init__(self, cfg: Config, runtime: Runtime, model: torch.nn.Module,
                 splits: dict[str, TokenizedSplit], pad_id: int, monitor: Monitor):
        self.cfg, self.tcfg, self.runtime = cfg, cfg.train, runtime
        self.module, self.splits, self.pad_id, self.monitor = model, splits, pad_id, monitor
        self.num_labels = len(cfg.prepare.labels)
        self.total = steps_per_epoch(len(self.epoch_batches(0)), self.tcfg.grad_accum_steps) \
            * self.tcfg.epochs
        optimizer = build_optimizer(model, self.tcfg.learning_rate, self.tcfg.weight_decay,
                                    runtime.device)
        self.optim = Optim(optimizer, torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_linear_decay(self.total, self.tcfg.warmup)),
            grad_scaler(runtime, self.tcfg.precision), self.tcfg.max_grad_norm)
        self.model = DistributedDataParallel(model) if runtime.distributed else model
        self.amp = autocast(runtime, self.tcfg.precision)
        self.window = Window.create(self.num_labels, runtime.device)
        self.progress = Progress()
        self.fingerprint = fingerprint(cfg)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's micro-batches of `epoch` (the order depends on seed and epoch only)."""
        batches = shard_batches(length_grouped_batches(
            self.splits["train"].lengths, self.tcfg.batch_size, self.tcfg.seed, epoch),
            self.runtime.rank, self.runtime.world_size)
        if not batches:
            raise StageError(f"train split has {len(self.splits['train'])} rows: too few for "
                             f"batch_size {self.tcfg.batch_size} on "
                             f"{self.runtime.world_size} process(es)")
        return batches

    def fit(self) -> dict:
        """Run the remaining epochs; return the run's figures."""
        started = time.perf_counter() - self.progress.train_seconds
        if self.progress.step == 0:
            self.monitor.start(0)
        with tqdm(total=self.total, initial=self.progress.step, desc="train", unit="step",
                  disable=not self.runtime.is_main) as bar:
            for epoch in range(self.progress.epoch, self.tcfg.epochs):
                batches = self.epoch_batches(epoch)
                start = self.progress.batch_index
                for index, batch in enumerate(iterate_batches(
                        self.splits["train"], batches[start:], self.pad_id,
                        self.runtime.device), start=start):
                    if self.micro_step(batch, batches, index):
                        bar.update()
                        self.after_update(batches, index, bar, started)
                self.progress.epoch, self.progress.batch_index = epoch + 1, 0
                self.monitor.writer.scalars({"epoch": epoch + 1}, self.progress.step, "train/")
        return self.summary(time.perf_counter() - started)

    def micro_step(self, batch, batches: list[np.ndarray], index: int) -> bool:
        """One forward/backward; True when the optimizer stepped."""
        update, scale = accumulation(index, len(batches), self.tcfg.grad_accum_steps)
        loss, logits, grad_norm = train_step(self.model, batch, self.optim, self.amp, scale,
                                             update)
        real = int(self.splits["train"].lengths[batches[index]].sum())
        self.window.add(self.progress.step, loss, logits, batch, grad_norm, real)
        self.progress.samples += len(batches[index])
        self.progress.real_tokens += real
        self.progress.batch_index = index + 1
        if update:
            self.progress.step += 1
            if self.runtime.is_main and self.monitor.histograms_due(self.progress.step):
                self.monitor.histograms(self.progress.step, batch, logits,
                                        self.splits["train"].lengths[batches[index]], self.module)
            self.optim.optimizer.zero_grad(set_to_none=True)
        return update

    def after_update(self, batches, index: int, bar, started: float) -> None:
        """Logging, validation and checkpointing after an optimizer step."""
        step, tb = self.progress.step, self.cfg.tensorboard
        if step % tb.log_every == 0 or step == self.total:
            self.window.check_finite(step, self.cfg, self.progress.checkpoint_step)
            last = self.window.flush(self.runtime)
            last["learning_rate"] = self.optim.scheduler.get_last_lr()[0]
            self.monitor.writer.scalars(last, step, "train/")
            if self.runtime.device.type == "cuda":
                self.monitor.writer.scalars({"gpu_memory_gb": torch.cuda.max_memory_allocated(
                    self.runtime.device) / 2**30}, step, "system/")
            bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}")
            self.progress.last = last
        at_epoch_end = index == len(batches) - 1
        every = self.tcfg.eval_every
        if (every and step % every == 0) or (at_epoch_end and (not every or step == self.total)):
            self.validate(step)
        if self.tcfg.checkpoint_every and step % self.tcfg.checkpoint_every == 0 \
                and step < self.total:
            self.window.check_finite(step, self.cfg, self.progress.checkpoint_step)
            self.progress.train_seconds = time.perf_counter() - started
            self.checkpoint()

    def validate(self, step: int) -> None:
        """Validation scores and pictures (every rank computes them: cheap, no sync)."""
        split = self.splits["validation"]
        logits = predict_logits(self.module, split, self.tcfg.batch_size * 4, self.pad_id,
                                self.runtime.device, self.amp)
        report = classification_report(logits, split.labels, self.num_labels)
        self.progress.validation = report
        if self.runtime.is_main:
            self.monitor.evaluation(step, report, logits, split.labels)
        log.info("step %d/%d validation %s", step, self.total,
                 {k: round(v, 4) for k, v in report.items()})

    def checkpoint(self) -> None:
        """Save everything needed to resume (rank 0 only)."""
        self.progress.checkpoint_step = self.progress.step
        if not self.runtime.is_main:
            return
        self.monitor.writer.flush()
        save_checkpoint(self.cfg.paths.checkpoints, {
            "fingerprint": self.fingerprint, "model": self.module.state_dict(),
            "optimizer": self.optim.optimizer.state_dict(),
            "scheduler": self.optim.scheduler.state_dict(),
            "scaler": self.optim.scaler.state_dict(), "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.runtime.device)
            if self.runtime.device.type == "cuda" else None,
            "window": self.window.state_dict(), "progress": asdict(self.progress)})
        log.info("checkpoint at step %d", self.progress.step)

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint made by `checkpoint` under the same fingerprint."""
        self.module.load_state_dict(state["model"])
        self.optim.optimizer.load_state_dict(state["optimizer"])
        self.optim.scheduler.load_state_dict(state["scheduler"])
        self.optim.scaler.load_state_dict(state["scaler"])
        if self.runtime.is_main:
            torch.set_rng_state(state["rng"])
            if state.get("cuda_rng") is not None and self.runtime.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], self.runtime.device)
        self.window.load_state_dict(state["window"])
        self.progress = Progress(**state["progress"])
        log.info("resuming from the checkpoint at step %d of %d", self.progress.step, self.total)

    def summary(self, seconds: float) -> dict:
        """Figures for metrics/train.json."""
        world, p = self.runtime.world_size, self.progress
        return {"steps": p.step, "epochs": self.tcfg.epochs, "train_seconds": round(seconds, 2),
                "samples_per_second": round(p.samples * world / seconds, 2),
                "tokens_per_second": round(p.real_tokens * world / seconds, 1),
                "final_train_loss": p.last.get("loss"),
                "final_train_accuracy": p.last.get("accuracy"), "validation": p.validation}


def final_evaluation(trainer: Trainer, cfg: Config) -> None:
    """Every split's scores at the last step, HParams, and projector embeddings."""
    device, tb = trainer.runtime.device, cfg.tensorboard
    reports = {"validation": trainer.progress.validation}  # fit validates at the last step
    for name, split in trainer.splits.items():
        if name in reports or name == "train":
            continue
        logits = predict_logits(trainer.module, split, cfg.evaluate.batch_size, trainer.pad_id,
                                device, trainer.amp)
        reports[name] = classification_report(logits, split.labels, len(cfg.prepare.labels))
    trainer.monitor.final(trainer.progress.step, reports)
    if tb.embeddings:
        val = trainer.splits["validation"]
        rows = np.random.default_rng(cfg.train.seed).permutation(len(val))[:tb.embeddings]
        logits, vectors = predict_logits(trainer.module, val.subset(rows), cfg.evaluate.batch_size,
                                         trainer.pad_id, device, trainer.amp, embeddings=True)
        trainer.monitor.embeddings(trainer.progress.step, vectors, val.labels[rows],
                                   logits.argmax(-1).numpy(), rows)


def save_model(model: torch.nn.Module, tokenizer, target: str | Path) -> None:
    """Write a HF folder (safetensors weights, config with id2label, tokenizer) atomically."""
    with atomic_dir(target) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)


def build_trainer(cfg: Config, runtime: Runtime) -> tuple[Trainer, object]:
    """Data, model (same initial weights on every rank), monitor and trainer."""
    paths = cfg.paths
    torch.manual_seed(cfg.train.seed)
    splits = load_splits(paths.tokenized)
    tokenizer = load_tokenizer(paths.base_model)
    model = load_classifier(paths.base_model, cfg.prepare.labels).to(runtime.device)
    torch.manual_seed(cfg.train.seed + runtime.rank)  # each rank its own dropout masks
    texts = pd.read_parquet(Path(paths.prepared) / "validation.parquet")["text"].tolist()
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


def train(cfg: Config) -> None:
    """Stage body: launch DDP workers if asked, else train in this process."""
    if needs_launch(cfg.train):
        launch_distributed(cfg.train)
        return
    runtime = init_runtime(cfg.train.threads)
    if not runtime.is_main:  # one voice: rank 0 logs progress, the others only warnings
        logging.getLogger().setLevel(logging.WARNING)
        transformers.logging.set_verbosity_error()
    try:
        trainer, tokenizer = build_trainer(cfg, runtime)
        log.info("training %s (%.1fM parameters) on %s x%d, %s, %d steps", cfg.paths.base_model,
                 trainer.module.num_parameters() / 1e6, runtime.device, runtime.world_size,
                 cfg.train.precision, trainer.total)
        try:
            summary = trainer.fit()
            if runtime.is_main:
                final_evaluation(trainer, cfg)
        finally:
            trainer.monitor.writer.close()
        if runtime.is_main:
            save_model(trainer.module, tokenizer, cfg.paths.finetuned)
            summary.update(num_parameters=trainer.module.num_parameters(),
                           device=runtime.device.type, world_size=runtime.world_size,
                           precision=cfg.train.precision, hardware=hardware())
            write_json(cfg.paths.train_metrics, summary)
            clear_checkpoints(cfg.paths.checkpoints)  # finished: nothing left to resume
    finally:
        shutdown(runtime)


@record
def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.train`)."""
    run_stage("train", __doc__.splitlines()[0], train, argv)


if __name__ == "__main__":
    main()
