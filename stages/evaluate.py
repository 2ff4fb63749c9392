"""evaluate: score the fine-tuned model on validation, test and every out-of-domain split.

Each split is scored once, here, in float32. Reads `<trained>`, `<tokenized>`, the texts
in `<prepared>` and the selected step from `metrics/train.json`; writes `metrics/eval.json`
(a DVC metric: loss, accuracy, macro precision/recall/F1, MCC and ECE per split),
`metrics/eval_classes.json` (per-class precision/recall/F1), the same scores as a
TensorBoard run in `<eval_tensorboard>` (with HPARAMS), `<predictions>/<split>.csv` (text,
label, prediction, class probabilities) and `<predictions>/drift_reference.json` (the
validation split's predicted-label mix and token lengths, which serving and predict
compare live traffic with).
"""
from __future__ import annotations

import logging

from finetuning.config import Config
from finetuning.data.batching import load_splits
from finetuning.data.prepared import read_inputs
from finetuning.data.tokenizer import load_tokenizer
from finetuning.inference.model import load_classifier, predictions_frame, score_splits
from finetuning.metrics import nest_results, per_class
from finetuning.monitoring.drift import REFERENCE_FILE, build_reference, write_reference
from finetuning.monitoring.scores import write_scores_run
from finetuning.outputs import read_json, stage_outputs
from finetuning.stage import run_stage
from finetuning.training.runtime import init_runtime

log = logging.getLogger("stages.evaluate")


def evaluate(cfg: Config) -> None:
    """Predict every non-train split, write metrics and predictions."""
    paths, labels = cfg.paths, cfg.prepare.labels
    runtime = init_runtime(cfg.train.threads)
    model = load_classifier(paths.trained).to(runtime.device)
    pad_id = load_tokenizer(paths.trained).pad_token_id
    splits = load_splits(paths.tokenized, skip=("train",))
    scored = score_splits(model, splits, cfg.evaluate.batch_size, pad_id, runtime.device)
    results = {name: report for name, (_, report) in scored.items()}
    for name, report in results.items():
        log.info("%s: %s", name, {k: round(v, 4) for k, v in report.items()})
    train = read_json(paths.train_metrics)
    with stage_outputs() as out:  # predictions, scores and their log land together
        folder = out.dir(paths.predictions)
        for name, (logits, _) in scored.items():
            frame = predictions_frame(read_inputs(paths.prepared, name), splits[name].labels,
                                      logits, labels)
            frame.to_csv(folder / f"{name}.csv", index=False)
        write_reference(build_reference(labels, scored["validation"][0].argmax(-1).numpy(),
                                        splits["validation"].lengths), folder / REFERENCE_FILE)
        write_scores_run(out.dir(paths.eval_tensorboard), cfg,
                         train.get("selected_step", train["steps"]), results)
        out.json(paths.eval_classes, nest_results(
            {name: per_class(logits, splits[name].labels, labels)
             for name, (logits, _) in scored.items()}))
        out.json(paths.eval_metrics, nest_results(results))


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.evaluate`)."""
    run_stage("evaluate", __doc__.splitlines()[0], evaluate, argv)


if __name__ == "__main__":
    main()
