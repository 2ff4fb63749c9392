"""One training run from start to finish: data, model and monitor assembled (resuming a
checkpoint when one fits), the loop run, the selected weights calibrated, the model
saved."""
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
from finetuning.data.truncation import Truncation
from finetuning.errors import StageError
from finetuning.inference.model import load_classifier, predict_logits
from finetuning.metrics import classification_report
from finetuning.monitoring.monitor import Monitor
from finetuning.monitoring.writer import MetricsWriter
from finetuning.pretraining.base import base_of, has_trained_pooler
from finetuning.provenance import hardware
from finetuning.training.calibration import fit_temperature, fold_temperature
from finetuning.training.checkpoint import data_fingerprint, fingerprint, load_checkpoint
from finetuning.training.lora import merge_lora, trainable_parameters, with_lora
from finetuning.training.loop import Trainer
from finetuning.training.runtime import Runtime, quiet_unless_main

log = logging.getLogger(__name__)


def build_trainer(cfg: Config, runtime: Runtime) -> tuple[Trainer, PreTrainedTokenizerBase]:
    """Data, model (same initial weights on every rank), monitor and trainer."""
    paths = cfg.paths
    quiet_unless_main(runtime)
    torch.manual_seed(cfg.train.seed)
    splits = load_splits(paths.tokenized)
    base = base_of(paths)
    tokenizer = load_tokenizer(base)
    model = load_classifier(base, cfg.prepare.labels)
    if not has_trained_pooler(base):
        log.info("%s has no pooler weights (masked-LM pretraining trains none): the pooler "
                 "starts from BERT's initialisation, seeded by train.seed, and trains", base)
    if cfg.train.method == "lora":
        model = with_lora(model, cfg.train.lora, base)
    model = model.to(runtime.device).train()  # from_pretrained gives eval mode: no dropout
    torch.manual_seed(cfg.train.seed + runtime.rank)  # each rank its own dropout masks
    texts = read_texts(paths.prepared, "validation")
    run_id = fingerprint(cfg, runtime.world_size)
    check_same_run(runtime, data_fingerprint(paths.tokenized), run_id)
    state = load_checkpoint(paths.checkpoints, run_id) if runtime.is_main else None
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
                      Monitor(writer, cfg, texts), run_id)
    if resuming:
        trainer.resume(state)
    return trainer, tokenizer


def check_same_run(runtime: Runtime, data_id: str, run_id: str) -> None:
    """Every rank must train the same run: a node that joined with other tokenized data,
    params or base model would silently train on something else. Every rank raises the
    same error, so node 0's stage fails too and says which rank differs."""
    if not runtime.distributed:
        return
    everyone: list = [None] * runtime.world_size
    torch.distributed.all_gather_object(everyone, (data_id, run_id))
    for rank, (data, run) in enumerate(everyone):
        if data != everyone[0][0]:
            raise StageError(
                f"rank {rank} has other tokenized data than rank 0 (fingerprint {data}, "
                f"rank 0's {everyone[0][0]}): every node needs node 0's data/tokenized (run "
                "`dvc pull tokenize` or `dvc repro tokenize` at node 0's commit)")
        if run != everyone[0][1]:
            raise StageError(
                f"rank {rank} has other params or another base model than rank 0 (run "
                f"fingerprint {run}, rank 0's {everyone[0][1]}): every node needs node 0's "
                "commit (params.yaml) and models/base")


def run_training(trainer: Trainer) -> tuple[dict, dict]:
    """Train to the end (or an early stop); on rank 0 keep the selected weights, calibrate
    them and log the projector; close the log. Returns (figures that compare runs, what
    ran). The splits are scored once, by the evaluate stage, not here."""
    cfg, runtime, module = trainer.cfg, trainer.runtime, trainer.module
    log.info("training %s (%.1fM parameters) on %s x%d, %s, %d steps", base_of(cfg.paths),
             module.num_parameters() / 1e6, runtime.device, runtime.world_size,
             cfg.train.precision, trainer.total)
    ran = {}
    try:
        summary = trainer.fit()
        if runtime.is_main:
            ran = finish(trainer, summary)
    finally:
        trainer.monitor.writer.close()
    summary["trainable_parameters"] = trainable_parameters(module)
    if trainer.class_weights is not None:
        ran["class_weights"] = dict(zip(cfg.prepare.labels,
                                        (round(w, 4) for w in trainer.class_weights)))
    ran.update(method=cfg.train.method, num_parameters=module.num_parameters(),
               device=runtime.device.type,
               world_size=runtime.world_size, precision=cfg.train.precision,
               hardware=hardware())
    return summary, ran


def finish(trainer: Trainer, summary: dict) -> dict:
    """The selected weights back in the model and the temperature folded in, both recorded
    (`summary`, TensorBoard), and the projector's embeddings of the final model. Returns
    the selection's details for train_run.json."""
    selection, step = trainer.selection, trainer.progress.step
    if selection.report is None:
        raise StageError("training ended without a validation pass: nothing to select by")
    selection.restore(trainer.module)
    why = selection.why(step)
    log.info("keeping the weights of step %d: %s", selection.step, why)
    summary["selected_step"] = selection.step
    summary[f"selected_validation_{selection.metric}"] = selection.report[selection.metric]
    if trainer.cfg.train.calibrate:
        summary["calibration"] = calibrate(trainer.module, selection.logits,
                                           trainer.splits["validation"].labels)
    trainer.monitor.selected(step, selection.step, why, summary.get("calibration"))
    project(trainer)
    return {"selected_by": why, "validation": selection.report}


def calibrate(model: torch.nn.Module, logits: torch.Tensor, labels: np.ndarray) -> dict:
    """Fit a temperature on the validation logits, fold it into `model`; before/after."""
    num_labels = logits.shape[-1]
    temperature = fit_temperature(logits, labels)
    fold_temperature(model, temperature)
    before = classification_report(logits, labels, num_labels)
    after = classification_report(logits / temperature, labels, num_labels)
    log.info("temperature %.4f: validation ECE %.4f -> %.4f, log-loss %.4f -> %.4f",
             temperature, before["ece"], after["ece"], before["loss"], after["loss"])
    return {"temperature": temperature, "ece_before": before["ece"], "ece_after": after["ece"],
            "loss_before": before["loss"], "loss_after": after["loss"]}


def project(trainer: Trainer) -> None:
    """Pooled embeddings of some validation rows for the PROJECTOR tab."""
    cfg, device = trainer.cfg, trainer.runtime.device
    if not cfg.tensorboard.embeddings:
        return
    val = trainer.splits["validation"]
    rows = np.random.default_rng(cfg.train.seed).permutation(len(val))[:cfg.tensorboard.embeddings]
    logits, vectors = predict_logits(trainer.module, val.subset(rows), cfg.evaluate.batch_size,
                                     trainer.pad_id, device, trainer.amp, embeddings=True)
    trainer.monitor.embeddings(trainer.progress.step, vectors, val.labels[rows],
                               logits.argmax(-1).numpy(), rows)


def save_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
               out: Path, truncation: Truncation) -> None:
    """Write a HF folder (safetensors weights, config with id2label, tokenizer) into the
    empty folder `out` (a staged output).

    The tokenizer records the training truncation (finetuning/data/truncation.py), so
    whoever loads the folder (`finetune predict`, `pipeline(..., truncation=True)`) cuts
    texts where training did."""
    truncation.record(tokenizer)
    model = merge_lora(model, out)  # LoRA: the adapter saved in out/adapter, merged
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
