"""The report's pretraining section: how the base was made (fetched, built from scratch,
further pretrained with masked LM) and, when there was pretraining, its curves."""
from __future__ import annotations

from finetuning.config import SCRATCH, Config
from finetuning.reporting.document import Image, Section, Table, fmt
from finetuning.reporting.figures import PRETRAIN_PANELS, curves_figure

FIGURES = (("loss", "masked-LM loss (last log window)"),
           ("masked_accuracy", "masked-token accuracy (last log window)"),
           ("perplexity", "perplexity, exp(loss)"), ("seconds", "seconds"),
           ("samples_per_second", "samples/s"), ("texts", "train-split texts"),
           ("corpus_texts", "corpus texts (pretrain.corpus)"), ("vocab_size", "vocabulary"),
           ("parameters", "encoder parameters"))


def base_story(figures: dict, cfg: Config) -> str:
    """One sentence: where the base came from, and what pretraining did to it."""
    steps, scratch = figures.get("steps", 0), cfg.fetch.model == SCRATCH
    if scratch:
        made = (f"A BERT built from scratch ({cfg.scratch.layers} layers, hidden "
                f"{cfg.scratch.hidden_size}, {cfg.scratch.heads} heads; seeded random weights) "
                f"with a WordPiece vocabulary of {fmt(figures.get('vocab_size'))} tokens learnt "
                "from the train split's texts only")
    else:
        made = f"The fetched base `{cfg.fetch.model}`"
    if not steps:
        return f"{made}, fine-tuned as it is (`pretrain.steps` = 0)."
    return (f"{made}, pretrained with masked language modelling for {steps} steps of "
            f"{cfg.pretrain.batch_size} texts (`{cfg.paths.pretrain_metrics}`; curves from the "
            f"event files in `{cfg.paths.pretrain_tensorboard}`), then fine-tuned.")


def pretraining_section(figures: dict, scalars: dict, cfg: Config) -> Section:
    """The base's story; with pretraining, its figures and curves."""
    blocks: list = [base_story(figures, cfg)]
    if figures.get("steps"):
        blocks += [Table(["", "value"], [[label, fmt(figures.get(key))] for key, label in
                                         FIGURES if key in figures]),
                   Image("pretraining.png", curves_figure(scalars, PRETRAIN_PANELS),
                         "pretraining curves")]
    return Section("Pretraining", blocks)
