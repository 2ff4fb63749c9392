"""One pretraining run from start to finish: the model to pretrain (the fetched base with
a masked-LM head, or a scratch BERT and tokenizer), the texts encoded once, a checkpoint
resumed when one fits, the loop, and the base it writes for tokenize and train."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForMaskedLM, PreTrainedTokenizerBase

from finetuning.config import Config
from finetuning.data.sources import sha256_of
from finetuning.data.tokenizer import load_tokenizer
from finetuning.digest import record_weights_digest, weights_digest
from finetuning.monitoring.writer import MetricsWriter
from finetuning.outputs import stage_outputs
from finetuning.pretraining.base import has_trained_pooler, is_scratch
from finetuning.pretraining.corpus import CORPUS, corpus_texts, train_texts
from finetuning.pretraining.mlm import MlmRun, encode
from finetuning.pretraining.scratch import scratch_model, train_tokenizer
from finetuning.training.checkpoint import clear_checkpoints, load_checkpoint
from finetuning.training.runtime import init_runtime

log = logging.getLogger(__name__)

NEUTRAL_KEYS = ("checkpoint_every", "threads", "log_every")  # a resume may change these
KEPT_TOKENIZER = "tokenizer"  # in pretrain_checkpoints: a scratch run's learnt tokenizer


def fingerprint(cfg: Config) -> str:
    """Hash of what shapes the run: its params, the train texts, the corpus, the base."""
    fetched, scratch = Path(cfg.paths.base_model), is_scratch(cfg.paths.base_model)
    settings = {k: v for k, v in asdict(cfg.pretrain).items() if k not in NEUTRAL_KEYS}
    parts = [json.dumps({"pretrain": settings, "text_column": cfg.prepare.text_column,
                         "scratch": asdict(cfg.scratch) if scratch else None}, sort_keys=True),
             sha256_of(Path(cfg.paths.prepared) / "train.parquet")]
    parts += [sha256_of(p) for p in sorted((Path(cfg.paths.raw_data) / CORPUS).rglob("*"))
              if p.is_file()]
    if not scratch:
        parts += [(fetched / "config.json").read_text(), weights_digest(fetched)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def scratch_tokenizer(cfg: Config, texts: list[str], resuming: bool) -> PreTrainedTokenizerBase:
    """The tokenizer of a scratch base: learnt from `texts` (the train split's), or, when
    resuming, the one the checkpoint was made with. The trainer breaks ties between equally
    frequent merges in hash order, so two builds may differ in a few tokens: the learnt
    one is kept beside the checkpoints for a resume to be exact."""
    kept = Path(cfg.paths.pretrain_checkpoints) / KEPT_TOKENIZER
    if resuming and kept.is_dir():
        return load_tokenizer(kept)
    tokenizer = train_tokenizer(texts, cfg.scratch.vocab_size, cfg.scratch.max_positions)
    log.info("scratch: a WordPiece vocabulary of %d tokens learnt from %d train texts",
             len(tokenizer), len(texts))
    if cfg.pretrain.steps and cfg.pretrain.checkpoint_every:
        tokenizer.save_pretrained(kept)
    return tokenizer


def model_to_pretrain(cfg: Config, texts: list[str], resuming: bool
                      ) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A scratch BERT and tokenizer, or the fetched base with a masked-LM head (new when
    its checkpoint has none: seeded)."""
    fetched = Path(cfg.paths.base_model)
    if is_scratch(fetched):
        tokenizer = scratch_tokenizer(cfg, texts, resuming)
        return scratch_model(cfg.scratch, tokenizer, cfg.pretrain.seed), tokenizer
    torch.manual_seed(cfg.pretrain.seed)
    return (AutoModelForMaskedLM.from_pretrained(fetched, local_files_only=True),
            load_tokenizer(fetched))


def save_base(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path,
              fetched: Path) -> None:
    """The encoder without its masked-LM head, as a plain HF folder; a fetched base's
    trained pooler is kept (masked LM does not train one)."""
    encoder = model.base_model
    if not is_scratch(fetched) and has_trained_pooler(fetched):
        full = AutoModel.from_pretrained(fetched, local_files_only=True)
        full.load_state_dict(encoder.state_dict(), strict=False)
        encoder = full
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    record_weights_digest(folder)


def run_pretraining(cfg: Config) -> None:
    """Pretrain (resuming a fitting checkpoint) and write the base and its figures."""
    paths, steps = cfg.paths, cfg.pretrain.steps
    device = init_runtime(cfg.pretrain.threads).device  # a GPU when torch sees one
    texts, run_id = train_texts(paths.prepared), fingerprint(cfg)
    state = load_checkpoint(paths.pretrain_checkpoints, run_id) if steps else None
    model, tokenizer = model_to_pretrain(cfg, texts, resuming=state is not None)
    corpus = corpus_texts(paths.raw_data, cfg.prepare.text_column)
    ids = encode(texts + corpus, tokenizer, cfg.pretrain.max_length)
    log.info("pretraining on %s (one process; the collator masks on the CPU)", device)
    run = MlmRun(cfg.pretrain, model.to(device), tokenizer, ids, device, run_id)
    if state:
        run.resume(state)
    else:
        shutil.rmtree(paths.pretrain_tensorboard, ignore_errors=True)
    Path(paths.pretrain_tensorboard).mkdir(parents=True, exist_ok=True)
    writer = MetricsWriter(paths.pretrain_tensorboard, enabled=steps > 0,
                           purge_step=state["step"] + 1 if state else None)
    final = run.run(writer, paths.pretrain_checkpoints) if steps else {}
    writer.close()
    summary = {"steps": steps, "texts": len(texts), "corpus_texts": len(corpus),
               "vocab_size": len(tokenizer),
               "parameters": sum(p.numel() for p in model.base_model.parameters()),
               "seconds": round(run.seconds, 1),
               "samples_per_second": round(steps * cfg.pretrain.batch_size
                                           / max(run.seconds, 1e-9), 1) if steps else 0.0,
               **{k: round(v, 4) for k, v in final.items() if k != "learning_rate"}}
    with stage_outputs() as out:
        save_base(model, tokenizer, out.dir(paths.pretrained), Path(paths.base_model))
        out.json(paths.pretrain_metrics, summary)
    clear_checkpoints(paths.pretrain_checkpoints)
    log.info("pretrained %d steps: %s", steps, {k: summary[k] for k in final if k in summary})
