"""The training loop: one optimizer step (`train_step`) and the epochs around it
(`Trainer`), with logging, validation and checkpoints beside the loop, not inside it."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from finetuning.config import Config
from finetuning.data.batching import (TokenizedSplit, iterate_batches, length_grouped_batches,
                                      model_inputs, shard_batches, usable_positions)
from finetuning.errors import StageError
from finetuning.inference.model import predict_logits
from finetuning.metrics import classification_report
from finetuning.monitoring.monitor import Monitor
from finetuning.training.checkpoint import (load_trainable, save_checkpoint,
                                            trainable_state)
from finetuning.training.runtime import Runtime, autocast, grad_scaler
from finetuning.training.schedule import (accumulation, build_optimizer, build_scheduler,
                                          steps_per_epoch)
from finetuning.training.selection import Selection
from finetuning.training.window import Progress, Window

log = logging.getLogger(__name__)


@dataclass
class Optim:
    """Everything that changes parameters, bundled so train_step stays short."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    max_grad_norm: float
    class_weights: torch.Tensor | None = None  # of the cross-entropy (train.class_weights)


def class_weights(labels: np.ndarray, num_labels: int, mode: str) -> list[float] | None:
    """`balanced`: n / (classes x count of the class) on the train split (scikit-learn's
    rule), so every class weighs as much in the loss whatever its share; `none`: None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_labels)
    return [len(labels) / (num_labels * count) for count in counts.tolist()]


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
            logits = model(**model_inputs(batch)).logits
        loss = F.cross_entropy(logits.float(), batch["labels"], weight=optim.class_weights)
        optim.scaler.scale(loss * scale).backward()
    if not update:
        return loss, logits, None
    optim.scaler.unscale_(optim.optimizer)
    max_norm = optim.max_grad_norm or float("inf")  # inf: measure the norm, clip nothing
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if not optim.scaler.is_enabled():
        optim.optimizer.step()
        optim.scheduler.step()
        return loss, logits, grad_norm
    # fp16: the scaler skips the optimizer step when a gradient overflowed, and lowers its
    # scale; the schedule then must not advance either (one host sync, fp16 only).
    before = optim.scaler.get_scale()
    optim.scaler.step(optim.optimizer)
    optim.scaler.update()
    if optim.scaler.get_scale() >= before:
        optim.scheduler.step()
    return loss, logits, grad_norm


class Trainer:
    """The loop and what sits beside it: logging, validation, checkpoints."""

    def __init__(self, cfg: Config, runtime: Runtime, model: torch.nn.Module,
                 splits: dict[str, TokenizedSplit], pad_id: int, monitor: Monitor,
                 run_id: str):
        self.cfg, self.tcfg, self.runtime = cfg, cfg.train, runtime
        self.module, self.splits, self.pad_id, self.monitor = model, splits, pad_id, monitor
        self.num_labels = len(cfg.prepare.labels)
        self.total = steps_per_epoch(len(self.epoch_batches(0)), self.tcfg.grad_accum_steps) \
            * self.tcfg.epochs
        rate = self.tcfg.lora.learning_rate if self.tcfg.method == "lora" \
            else self.tcfg.learning_rate
        optimizer = build_optimizer(model, rate, self.tcfg.weight_decay, runtime.device)
        self.class_weights = class_weights(splits["train"].labels, self.num_labels,
                                           self.tcfg.class_weights)
        weights = None if self.class_weights is None else torch.tensor(
            self.class_weights, dtype=torch.float32, device=runtime.device)
        self.optim = Optim(optimizer, build_scheduler(optimizer, self.tcfg, self.total),
                           grad_scaler(runtime, self.tcfg.precision), self.tcfg.max_grad_norm,
                           weights)
        self.model = DistributedDataParallel(model) if runtime.distributed else model
        self.amp = autocast(runtime, self.tcfg.precision)
        self.window = Window.create(self.num_labels, runtime.device)
        self.progress = Progress()
        self.selection = Selection(self.tcfg.select, self.tcfg.select_metric,
                                   self.tcfg.patience)
        self.stopped_early = False
        self.fingerprint = run_id  # checkpoint.fingerprint: what a checkpoint must match

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
            self.monitor.start(0, self.module)
        with tqdm(total=self.total, initial=self.progress.step, desc="train", unit="step",
                  disable=not self.runtime.is_main) as bar:
            for epoch in range(self.progress.epoch, self.tcfg.epochs):
                batches = self.epoch_batches(epoch)
                start = self.progress.batch_index
                for index, batch in enumerate(iterate_batches(
                        self.splits["train"], batches[start:], self.pad_id,
                        self.runtime.device, usable_positions(self.module.config)),
                        start=start):
                    if self.micro_step(batch, batches, index):
                        bar.update()
                        self.after_update(batches, index, bar, started)
                        if self.stopped_early:
                            break
                self.progress.epoch, self.progress.batch_index = epoch + 1, 0
                self.monitor.writer.scalars({"epoch": epoch + 1}, self.progress.step, "train/")
                if self.stopped_early:
                    log.info("stopping early at step %d: validation %s did not improve for "
                             "%d validation(s)", self.progress.step, self.tcfg.select_metric,
                             self.tcfg.patience)
                    break
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
        self.selection.observe(step, report, logits, self.module, self.runtime.is_main)
        if self.runtime.is_main:
            self.monitor.evaluation(step, report, logits, split.labels)
        log.info("step %d/%d validation %s", step, self.total,
                 {k: round(v, 4) for k, v in report.items()})
        stop = [self.selection.exhausted]
        if self.runtime.distributed:  # rank 0 decides, so no rank trains on alone
            torch.distributed.broadcast_object_list(stop, src=0)
        self.stopped_early = stop[0]

    def checkpoint(self) -> None:
        """Save everything needed to resume (rank 0 writes; every rank's own random state
        and window sums go in, so each rank resumes exactly)."""
        self.progress.checkpoint_step = self.progress.step
        ranks = [self.rank_state()]
        if self.runtime.distributed:
            gathered = [None] * self.runtime.world_size if self.runtime.is_main else None
            torch.distributed.gather_object(ranks[0], gathered, dst=0)
            ranks = gathered
        if not self.runtime.is_main:
            return
        self.monitor.writer.flush()
        save_checkpoint(self.cfg.paths.checkpoints, {
            "fingerprint": self.fingerprint, "model": trainable_state(self.module),
            "optimizer": self.optim.optimizer.state_dict(),
            "scheduler": self.optim.scheduler.state_dict(),
            "scaler": self.optim.scaler.state_dict(), "ranks": ranks,
            "progress": asdict(self.progress), "selection": self.selection.state_dict()})
        log.info("checkpoint at step %d", self.progress.step)

    def rank_state(self) -> dict:
        """This rank's dropout random state and log-window sums (on the CPU)."""
        cuda = self.runtime.device.type == "cuda"
        return {"rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.runtime.device) if cuda else None,
                "window": {k: v.cpu() if isinstance(v, torch.Tensor) else v
                           for k, v in self.window.state_dict().items()}}

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint made by `checkpoint` under the same fingerprint (so
        the same world size: one saved rank state per rank)."""
        load_trainable(self.module, state["model"])
        self.optim.optimizer.load_state_dict(state["optimizer"])
        self.optim.scheduler.load_state_dict(state["scheduler"])
        self.optim.scaler.load_state_dict(state["scaler"])
        mine = state["ranks"][self.runtime.rank]
        torch.set_rng_state(mine["rng"])
        if mine["cuda_rng"] is not None and self.runtime.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"], self.runtime.device)
        self.window.load_state_dict(mine["window"])
        self.progress = Progress(**state["progress"])
        self.selection.load_state_dict(state["selection"])
        log.info("resuming from the checkpoint at step %d of %d", self.progress.step, self.total)

    def summary(self, seconds: float) -> dict:
        """Figures for metrics/train.json."""
        world, p = self.runtime.world_size, self.progress
        return {"steps": p.step, "epochs": self.tcfg.epochs, "train_seconds": round(seconds, 2),
                "samples_per_second": round(p.samples * world / seconds, 2),
                "tokens_per_second": round(p.real_tokens * world / seconds, 1),
                "final_train_loss": p.last.get("loss"),
                "final_train_accuracy": p.last.get("accuracy"),
                "stopped_early": self.stopped_early}
