"""evaluate: score the fine-tuned model on validation, test and every out-of-domain split.

Writes `metrics/eval.json` (a DVC metric: loss, accuracy, macro precision/recall/F1 per
split) and one predictions CSV per split (text, label, prediction, class probabilities).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from stages.batching import TokenizedSplit, load_splits
from stages.cli import run_stage
from stages.config import Config
from stages.inference import classification_report, load_classifier, predict_logits
from stages.metrics import nest_results
from stages.outputs import atomic_dir, write_json
from stages.runtime import init_runtime
from stages.tokenize import load_tokenizer

log = logging.getLogger(__name__)


def predictions_frame(texts: pd.Series, split: TokenizedSplit, logits: torch.Tensor,
                      labels: list[str]) -> pd.DataFrame:
    """One row per example: text, true and predicted label names, class probabilities."""
    probs = logits.softmax(-1).numpy()
    frame = pd.DataFrame({"text": texts.to_numpy(),
                          "label": [labels[i] for i in split.labels],
                          "predicted": [labels[i] for i in probs.argmax(-1)],
                          "confidence": probs.max(-1)})
    for i, name in enumerate(labels):
        frame[f"prob_{name}"] = probs[:, i]
    return frame


def evaluate(cfg: Config) -> None:
    """Stage body: predict every non-train split, write metrics and predictions."""
    paths, labels = cfg.paths, cfg.prepare.labels
    runtime = init_runtime(cfg.train.threads)
    model = load_classifier(paths.finetuned).to(runtime.device)
    pad_id = load_tokenizer(paths.finetuned).pad_token_id
    results = {}
    with atomic_dir(paths.predictions) as out:
        for name, split in load_splits(paths.tokenized).items():
            if name == "train":
                continue
            logits = predict_logits(model, split, cfg.evaluate.batch_size, pad_id,
                                    runtime.device)
            results[name] = classification_report(logits, split.labels, len(labels))
            texts = pd.read_parquet(Path(paths.prepared) / f"{name}.parquet")["text"]
            predictions_frame(texts, split, logits, labels).to_csv(out / f"{name}.csv",
                                                                   index=False)
            log.info("%s: %s", name, {k: round(v, 4) for k, v in results[name].items()})
    write_json(paths.eval_metrics, nest_results(results))


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.evaluate`)."""
    run_stage("evaluate", __doc__.splitlines()[0], evaluate, argv)


if __name__ == "__main__":
    main()
