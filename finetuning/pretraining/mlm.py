"""The masked-language-modelling loop: texts tokenized once, batches of similar lengths
padded per batch and masked by transformers' collator (15% of the tokens; of those 80%
[MASK], 10% a random token, 10% kept), AdamW with linear warmup and decay, figures kept on
the device between log steps, and checkpoints that resume bit-exactly on the CPU (the
masking and dropout draw from torch's RNG, whose state the checkpoint holds; on a GPU the
dropout draws from CUDA's, which it does not hold)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, get_scheduler

from finetuning.config import Pretrain
from finetuning.errors import StageError
from finetuning.data.batching import length_grouped_batches
from finetuning.monitoring.writer import MetricsWriter
from finetuning.training.checkpoint import save_checkpoint
from finetuning.training.schedule import build_optimizer, warmup_steps

log = logging.getLogger(__name__)

IGNORED = -100  # the collator's label for tokens that are not masked


def encode(texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int
           ) -> list[list[int]]:
    """Token ids of every text (with [CLS]/[SEP]), cut at `max_length`; no padding."""
    return tokenizer(texts, truncation=True, max_length=max_length,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]


@dataclass
class Figures:
    """Sums since the last log step, on the device (read back only at log steps)."""

    loss: torch.Tensor  # summed over masked tokens: a batch with none masked adds nothing
    correct: torch.Tensor
    masked: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> Figures:
        return cls(*(torch.zeros((), device=device) for _ in range(3)))

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One batch: the logits and labels of its masked tokens, and `loss`, their mean
        (NaN when there are none: a few short texts can draw no mask at all)."""
        count = torch.tensor(labels.numel(), device=labels.device)
        self.loss += torch.where(count > 0, loss.detach() * count, 0.0)
        self.correct += (logits.detach().argmax(-1) == labels).sum()
        self.masked += count

    def means(self) -> dict[str, float]:
        """Per masked token since the last log step."""
        masked = max(self.masked.item(), 1)
        loss = self.loss.item() / masked
        return {"loss": loss, "masked_accuracy": self.correct.item() / masked,
                "perplexity": math.exp(min(loss, 50.0))}


def masked_lm(model: torch.nn.Module, batch: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, logits and labels of the masked tokens. BERT's head (`cls`) projects only
    those onto the vocabulary: the other 85% of the projection, a third of a small BERT's
    step, would be thrown away. Other heads get the whole sequence's logits."""
    labels = batch["labels"]
    where = labels != IGNORED
    head = getattr(model, "cls", None)
    if head is None:
        out = model(**batch)
        return out.loss, out.logits[where], labels[where]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = head(model.base_model(**inputs).last_hidden_state[where])
    return torch.nn.functional.cross_entropy(logits, labels[where]), logits, labels[where]


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every dropout layer of `model` drops `p` from now on. Only the modules change: the
    config, and so the base written for fine-tuning, keeps its own rate. A short
    pretraining learns more per second without dropout (Geiping & Goldstein 2023,
    "Cramming"), and its step is faster."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


class MlmRun:
    """One pretraining run of `cfg.steps` optimizer steps over `ids`."""

    def __init__(self, cfg: Pretrain, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                 ids: list[list[int]], device: torch.device, run_id: str):
        self.cfg, self.model, self.ids, self.device, self.run_id = cfg, model, ids, device, run_id
        self.lengths = np.array([len(x) for x in ids])
        set_dropout(model, cfg.dropout)
        self.collator = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=cfg.mlm_probability, mask_replace_prob=0.8,
            random_replace_prob=0.1, pad_to_multiple_of=8, return_tensors="pt")
        self.optimizer = build_optimizer(model, cfg.learning_rate, cfg.weight_decay, device)
        self.scheduler = get_scheduler("linear", self.optimizer,
                                       num_warmup_steps=warmup_steps(cfg.steps, cfg.warmup),
                                       num_training_steps=cfg.steps)
        self.step, self.seconds = 0, 0.0
        self.order: tuple[int, list[np.ndarray]] = (-1, [])

    def batch_rows(self, step: int) -> np.ndarray:
        """The rows of optimizer step `step`: epochs of seeded length-grouped batches."""
        per_epoch = math.ceil(len(self.ids) / self.cfg.batch_size)
        epoch, index = divmod(step, per_epoch)
        if self.order[0] != epoch:
            self.order = (epoch, length_grouped_batches(self.lengths, self.cfg.batch_size,
                                                        self.cfg.seed, epoch))
        return self.order[1][index]

    def train_step(self, figures: Figures) -> None:
        batch = self.collator([{"input_ids": self.ids[i]} for i in self.batch_rows(self.step)])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        loss, logits, labels = masked_lm(self.model, batch)
        if labels.numel():  # else nothing to learn from (and a NaN loss)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        figures.add(loss, logits, labels)
        self.step += 1

    def run(self, writer: MetricsWriter, checkpoints: str) -> dict[str, float]:
        """Train to `cfg.steps`; log every `log_every` steps; checkpoint into `checkpoints`."""
        self.model.train()
        figures, last = Figures.zeros(self.device), {}
        started = time.perf_counter() - self.seconds
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="pretrain", unit="step",
                   mininterval=5)
        while self.step < self.cfg.steps:
            self.train_step(figures)
            bar.update()
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                last = {**figures.means(),
                        "learning_rate": self.optimizer.param_groups[0]["lr"]}
                if not math.isfinite(last["loss"]):
                    raise StageError(f"pretraining diverged by step {self.step} (loss "
                                     f"{last['loss']}): lower pretrain.learning_rate "
                                     f"({self.cfg.learning_rate}) or raise pretrain.warmup")
                writer.scalars(last, self.step, prefix="pretrain/")
                bar.set_postfix(loss=f"{last['loss']:.3f}")
                figures = Figures.zeros(self.device)
            self.seconds = time.perf_counter() - started
            every = self.cfg.checkpoint_every
            if every and self.step % every == 0 and self.step < self.cfg.steps:
                writer.flush()
                save_checkpoint(checkpoints, self.state())
        bar.close()
        return last

    def state(self) -> dict:
        return {"fingerprint": self.run_id, "step": self.step, "seconds": self.seconds,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state()}

    def resume(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.step, self.seconds = state["step"], state["seconds"]
        log.info("resuming pretraining from the checkpoint at step %d", self.step)
