"""The sections of the report, top to bottom: summary, metrics against the baseline,
calibration, pretraining, training curves, test errors, deployment, data, what ran. Each
takes the loaded run and returns a
`Section` of paragraphs, tables and images."""
from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import torch

from finetuning.config import Config, Paths
from finetuning.data.prepared import shown_texts
from finetuning.metrics import confusion_matrix, reliability
from finetuning.provenance import hardware
from finetuning.reporting.document import MISSING, Image, Section, Table, fmt
from finetuning.reporting.figures import confusion_figure, curves_figure, pr_roc_figure, to_png
from finetuning.reporting.mistakes import mistakes_table
from finetuning.reporting.plots import Curves
from finetuning.reporting.pretraining import pretraining_section
from finetuning.reporting.reliability import ece_noise, reliability_figure
from finetuning.reporting.tables import (class_table, comparison_table, data_table,
                                         deployment_table, detail_table, dropped_table,
                                         key_params, sources_table, training_table)
from finetuning.reporting.run import RunData

CURVE_TAGS = ("train/loss", "eval/loss", "train/accuracy", "eval/accuracy",
              "train/learning_rate")


def summary_section(run: RunData, commit: str) -> Section:
    """The run in two sentences, and the verdict against the baseline."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    model, data = run.source.get("model", {}), run.source.get("data", {})
    seconds = run.train.get("train_seconds")
    return Section("Summary", [
        f"Commit `{commit}`, report written {now}. `{model.get('source')}`"
        f"{pretrained_note(run.pretrain)} ({fmt(run.train.get('num_parameters'))} parameters) "
        "fine-tuned on "
        f"`{data.get('source')}` ({fmt(run.prepared.get('rows', {}).get('train'))} training "
        f"rows): {run.train.get('steps')} optimizer steps over {run.train.get('epochs')} "
        f"epoch(s) in {fmt(seconds, None)} s on `{run.train.get('device')}` "
        f"x{run.train.get('world_size')}.",
        verdict(run.scores, run.baseline)])


def pretrained_note(pretrain: dict) -> str:
    steps = pretrain.get("steps")
    return f", pretrained for {steps} masked-LM steps," if steps else ""


def what_ran(run: RunData, cfg: Config) -> Section:
    """Provenance: sources, training figures and timing, hardware, params."""
    paths = cfg.paths
    return Section("What ran", [
        f"Sources (`{paths.source_record}`, written by the fetch stage):",
        sources_table(run.source),
        f"Training figures (`{paths.train_metrics}`). DVC does not record how long the other "
        "stages took; on the default data each takes seconds to a minute.",
        training_table(run.train),
        "Hardware that trained the model:" if "hardware" in run.train
        else "Hardware of the machine that wrote this report:",
        Table(["", "value"], [[k, v] for k, v in run.train.get("hardware", hardware()).items()]),
        "Key params (`params.yaml`):", key_params(cfg)])


def data_section(run: RunData, cfg: Config) -> Section:
    """Split sizes, label balance and length distribution."""
    return Section("Data", [
        f"Token lengths after truncation at `tokenize.max_length` = {cfg.tokenize.max_length}"
        f" (`{cfg.paths.tokenize_metrics}`); label shares from `{cfg.paths.prepare_metrics}`.",
        data_table(run.prepared, run.tokenized, cfg.prepare.labels),
        f"Where the splits came from: {split_origins(run.prepared)}. Rows dropped (a text "
        "with two labels loses every row; a text in two of the source's splits stays only "
        "in the later of train < validation < test):",
        dropped_table(run.prepared)])


def split_origins(prepared: dict) -> str:
    """prepare's `split_from`, train first: the source's own, carved, or stratified."""
    made = prepared.get("split_from", {})
    if len(set(made.values())) == 1:
        return f"every split {next(iter(made.values()))}"
    return ", ".join(f"{split} {made[split]}" for split in ("train", "validation", "test")
                     if split in made) or "not recorded"


def curve_summary(scalars: dict[str, list[tuple[int, float]]]) -> Table:
    """Per curve: points, step range, first, last, lowest and highest value."""
    rows = []
    for tag in CURVE_TAGS:
        series = scalars.get(tag, [])
        if not series:
            rows.append([tag, "0", MISSING, MISSING, MISSING, MISSING, MISSING])
            continue
        values = [v for _, v in series]
        rows.append([tag, str(len(series)), f"{series[0][0]}–{series[-1][0]}",
                     f"{values[0]:.6g}", f"{values[-1]:.6g}", f"{min(values):.6g}",
                     f"{max(values):.6g}"])
    return Table(["curve", "points", "steps", "first", "last", "min", "max"], rows)


def curves_section(scalars: dict[str, list[tuple[int, float]]], paths: Paths) -> Section:
    """Training curves, as logged (validation once per evaluation)."""
    return Section("Training curves", [
        f"Read back from the event files in `{paths.tensorboard}` (also exported to "
        f"`{paths.plots}` for `dvc plots`). Train values are means over the steps since the "
        "previous log point; validation values cover the whole validation split.",
        Image("curves.png", curves_figure(scalars), "training curves"),
        curve_summary(scalars)])


def verdict(scores: dict, baseline: dict) -> str:
    """One sentence: the fine-tuned model against the baseline on the test split."""
    ours, theirs = scores.get("test"), baseline.get("test")
    if not ours or not theirs:
        return "No test split to compare on."
    diff = ours["accuracy"] - theirs["accuracy"]
    side = "ahead of" if diff > 0 else "level with" if diff == 0 else "behind"
    return (f"On the in-domain **test** split the fine-tuned model is {side} the baseline: "
            f"accuracy {ours['accuracy']:.4f} vs {theirs['accuracy']:.4f} "
            f"({diff:+.4f}).")


def metrics_section(run: RunData, paths: Paths) -> Section:
    """The comparison with the TF-IDF + logistic regression baseline, and per class."""
    return Section("Metrics: fine-tuned model vs baseline", [
        "Baseline: TF-IDF word n-grams + logistic regression on the same train split "
        f"(`{paths.baseline_metrics}`). Δ = fine-tuned − baseline (for loss, lower is better). "
        "Precision, recall and F1 are macro averages; loss is the mean cross-entropy; MCC "
        "is the Matthews correlation; ECE the expected calibration error (15 bins).",
        comparison_table(run.scores, run.baseline), "All scores:",
        detail_table(run.scores, run.baseline),
        f"Per class, fine-tuned model (`{paths.eval_classes}`):", class_table(run.classes)])


def calibration_section(run: RunData, labels: list[str]) -> Section:
    """The fitted temperature, and the reliability diagram of the test predictions."""
    truth, probs = prediction_arrays(run.predictions, labels)
    fitted = run.train.get("calibration")
    told = ("`train.calibrate` is off: probabilities are the model's as trained."
            if not fitted else
            f"Temperature {fitted['temperature']:.4f}, fitted on the validation split and "
            "folded into the classifier's last layer (the argmax, hence accuracy, is "
            f"unchanged): validation ECE {fitted['ece_before']:.4f} → "
            f"{fitted['ece_after']:.4f}, log-loss {fitted['loss_before']:.4f} → "
            f"{fitted['loss_after']:.4f}.")
    median, p95 = ece_noise(probs)
    return Section("Calibration", [
        told, f"Test split (`metrics/eval.json`): ECE "
        f"{fmt(run.scores.get('test', {}).get('ece'))}; a perfectly calibrated model would "
        f"still show {median:.4f} on {len(probs)} rows from sampling alone (95th percentile "
        f"{p95:.4f}; labels drawn from its own probabilities). Bars at the diagonal mean a "
        "predicted probability of p is right p of the time.",
        Image("reliability.png", reliability_figure(reliability(probs, truth),
                                                    "reliability (test)"),
              "reliability diagram")])


def prediction_arrays(predictions: pd.DataFrame, labels: list[str]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """True label indices and class probabilities of the evaluate stage's predictions."""
    index = {name: i for i, name in enumerate(labels)}
    return (predictions["label"].map(index).to_numpy(),
            predictions[[f"prob_{name}" for name in labels]].to_numpy())


def errors_section(run: RunData, cfg: Config, curves: Curves) -> Section:
    """Confusion matrix, PR and ROC curves, and the most confident mistakes on test."""
    labels = cfg.prepare.labels
    truth, probs = prediction_arrays(run.predictions, labels)
    counts = confusion_matrix(torch.tensor(probs.argmax(-1)), torch.tensor(truth),
                              len(labels)).numpy()
    mistakes = mistakes_table(shown_texts(run.predictions), truth, probs, labels,
                              cfg.report.mistakes)
    return Section("Test split: errors", [
        Image("confusion.png", to_png(confusion_figure(counts, labels,
                                                       "confusion matrix (test)")),
              "confusion matrix"),
        f"Precision-recall and ROC for {curves.name}: average precision "
        f"{curves.average_precision:.4f}, ROC AUC {curves.roc_auc:.4f}." + "".join(
            f" Average precision of '{label}' against the rest: {ap:.4f}."
            for label, (_, ap) in curves.per_class.items()),
        Image("pr_roc.png", pr_roc_figure(curves.pr, curves.roc, curves.name, {
            label: points for label, (points, _) in curves.per_class.items()}),
              "precision-recall and ROC curves"),
        f"The {len(mistakes.rows)} most confident mistakes (`report.mistakes` = "
        f"{cfg.report.mistakes}); probability is the model's for its predicted label:",
        mistakes])


def deployment_section(run: RunData, paths: Paths) -> Section:
    """The export stage's measurements of torch, ONNX fp32 and ONNX int8."""
    return Section("Deployment", [
        f"The export stage's `{paths.onnx}` (fp32 and int8 ONNX, with tokenizer and config) "
        f"measured against the PyTorch model in one run on the same threads "
        f"(`{paths.export_metrics}`): test accuracy, batch-1 latency on a test text of median "
        "length, batch-32 throughput with tokenization, file size, and the largest logit "
        "difference from torch on the test split. Serve any of them with "
        "`finetune serve <folder> --backend torch|onnx|onnx-int8`.",
        deployment_table(run.export)])


def build_sections(run: RunData, cfg: Config, commit: str, curves: Curves) -> list[Section]:
    """The report, top to bottom."""
    return [summary_section(run, commit),
            metrics_section(run, cfg.paths), calibration_section(run, cfg.prepare.labels),
            pretraining_section(run.pretrain, run.pretrain_scalars, cfg),
            curves_section(run.scalars, cfg.paths), errors_section(run, cfg, curves),
            deployment_section(run, cfg.paths), data_section(run, cfg), what_ran(run, cfg)]
