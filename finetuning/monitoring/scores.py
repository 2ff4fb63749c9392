"""The evaluate stage's TensorBoard run (`paths.eval_tensorboard`): each split's final
scores as `final_<split>/<metric>` scalars at the step whose weights were scored, and the
run's params with them for the HPARAMS tab. The very numbers of metrics/eval.json: every
split is scored once, by evaluate, in float32."""
from __future__ import annotations

from pathlib import Path

from finetuning.config import Config
from finetuning.monitoring.writer import MetricsWriter

HPARAM_KEYS = ("learning_rate", "batch_size", "epochs", "warmup", "schedule", "weight_decay",
               "grad_accum_steps", "precision", "seed", "max_grad_norm", "select",
               "select_metric", "patience", "calibrate", "method")


def write_scores_run(logdir: str | Path, cfg: Config, step: int,
                     reports: dict[str, dict]) -> None:
    """Scalars per split and (with `tensorboard.hparams`) the HPARAMS entry, in `logdir`."""
    writer = MetricsWriter(logdir)
    try:
        for split, report in reports.items():
            writer.scalars({k: v for k, v in report.items() if k != "count"}, step,
                           f"final_{split}/")
        if cfg.tensorboard.hparams:
            params = {k: getattr(cfg.train, k) for k in HPARAM_KEYS}
            params["max_length"] = cfg.tokenize.max_length
            if cfg.train.method == "lora":
                params["lora_r"] = cfg.train.lora.r
            metrics = {f"hparam/{split}_{m}": report[m] for split, report in reports.items()
                       for m in ("accuracy", "f1", "loss", "ece")}
            writer.hparams(params, metrics, step)
    finally:
        writer.close()
