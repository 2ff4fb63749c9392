"""The sections of the report, top to bottom: summary, metrics against the baseline,
training curves, test errors, data, what ran. Each takes the loaded run and returns a
`Section` of paragraphs, tables and images."""
from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pandas as pd
import torch

from finetuning.config import Config, Paths
from finetuning.metrics import confusion_matrix
from finetuning.provenance import hardware
from finetuning.reporting.document import MISSING, Image, Section, Table
from finetuning.reporting.figures import confusion_figure, curves_figure, pr_roc_figure, to_png
from finetuning.reporting.mistakes import mistakes_table
from finetuning.reporting.plots import Curves
from finetuning.reporting.run import RunData

COLUMNS = ("accuracy", "precision", "recall", "f1", "loss")
HEADLINE = ("accuracy", "f1", "loss")
CURVE_TAGS = ("train/loss", "eval/loss", "train/accuracy", "eval/accuracy",
              "train/learning_rate")


def fmt(value, digits: int | None = 4) -> str:
    """A table cell: ints with thousands separators, floats with `digits` decimals (None for
    `.6g`), MISSING for None."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}" if digits is None else f"{value:.{digits}f}"


def flatten_eval(metrics: dict) -> dict[str, dict]:
    """eval.json's nesting as flat rows: validation, test, ood/<set>."""
    rows = {name: scores for name, scores in metrics.items() if name != "ood"}
    rows.update({f"ood/{name}": scores for name, scores in metrics.get("ood", {}).items()})
    return rows


def key_params(cfg: Config) -> Table:
    """The params that shape the result (dvc.yaml lists exactly these for the stage)."""
    rows = [["prepare.labels", ", ".join(cfg.prepare.labels)],
            ["prepare.max_rows", fmt(cfg.prepare.max_rows)],
            ["tokenize.max_length", fmt(cfg.tokenize.max_length)]]
    for section in ("train", "baseline"):
        rows += [[f"{section}.{k}", str(v)]
                 for k, v in dataclasses.asdict(getattr(cfg, section)).items()]
    return Table(["param", "value"], rows)


def sources_table(source: dict) -> Table:
    """Where data and model came from (fetch's provenance record)."""
    entries = [("data", source.get("data", {})), ("model", source.get("model", {}))]
    entries += [(f"ood/{name}", entry) for name, entry in source.get("ood", {}).items()]
    return Table(["what", "source", "pinned as"],
                 [[what, e.get("source", MISSING), e.get("archive") or e.get("revision")
                   or MISSING] for what, e in entries])


def training_table(train: dict) -> Table:
    """The train stage's figures (metrics/train.json)."""
    rows = [("parameters", train.get("num_parameters")), ("optimizer steps", train.get("steps")),
            ("epochs", train.get("epochs")),
            ("train wall time (s)", train.get("train_seconds")),
            ("samples/s", train.get("samples_per_second")),
            ("tokens/s", train.get("tokens_per_second")),
            ("device", f"{train.get('device')} x{train.get('world_size')}"),
            ("precision", train.get("precision")),
            ("final train loss", train.get("final_train_loss")),
            ("final train accuracy", train.get("final_train_accuracy"))]
    return Table(["figure", "value"], [[name, fmt(value, None)] for name, value in rows])


def summary_section(run: RunData, commit: str) -> Section:
    """The run in two sentences, and the verdict against the baseline."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    model, data = run.source.get("model", {}), run.source.get("data", {})
    seconds = run.train.get("train_seconds")
    return Section("Summary", [
        f"Commit `{commit}`, report written {now}. `{model.get('source')}` "
        f"({fmt(run.train.get('num_parameters'))} parameters) fine-tuned on "
        f"`{data.get('source')}` ({fmt(run.prepared.get('rows', {}).get('train'))} training "
        f"rows): {run.train.get('steps')} optimizer steps over {run.train.get('epochs')} "
        f"epoch(s) in {fmt(seconds, None)} s on `{run.train.get('device')}` "
        f"x{run.train.get('world_size')}.",
        verdict(run.scores, run.baseline)])


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


def data_table(prepared: dict, tokenized: dict, labels: list[str]) -> Table:
    """Rows, label balance, token lengths and truncation per split."""
    header = ["split", "rows", *(f"{name} %" for name in labels), "mean tokens", "p50",
              "p95", "max", "truncated", "truncated %"]
    rows = []
    for split, count in prepared.get("rows", {}).items():
        balance = prepared.get("labels", {}).get(split, {})
        stats = tokenized.get(split, {})
        shares = [fmt(100 * balance.get(name, 0) / count if count else None, 1)
                  for name in labels]
        rows.append([split, fmt(count), *shares,
                     fmt(stats.get("mean_length"), 1),
                     *(fmt(stats.get(k)) for k in ("p50_length", "p95_length", "max_length",
                                                    "truncated")),
                     fmt(100 * stats["truncated_fraction"] if stats else None, 2)])
    return Table(header, rows)


def data_section(run: RunData, cfg: Config) -> Section:
    """Split sizes, label balance and length distribution."""
    return Section("Data", [
        f"Token lengths after truncation at `tokenize.max_length` = {cfg.tokenize.max_length}"
        f" (`{cfg.paths.tokenize_metrics}`); label shares from `{cfg.paths.prepare_metrics}`.",
        data_table(run.prepared, run.tokenized, cfg.prepare.labels)])


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


def comparison_table(scores: dict, baseline: dict) -> Table:
    """Fine-tuned vs baseline per split: value, baseline value, difference."""
    header = ["split", "rows"]
    for name in HEADLINE:
        header += [name, "baseline", "Δ"]
    ours, theirs = flatten_eval(scores), flatten_eval(baseline)
    rows = []
    for split, result in ours.items():
        other = theirs.get(split, {})
        row = [split, fmt(result.get("count"))]
        for name in HEADLINE:
            diff = result[name] - other[name] if name in other else None
            row += [fmt(result[name]), fmt(other.get(name)),
                    MISSING if diff is None else f"{diff:+.4f}"]
        rows.append(row)
    return Table(header, rows)


def detail_table(scores: dict, baseline: dict) -> Table:
    """Every score of both models, two rows per split."""
    theirs = flatten_eval(baseline)
    rows = []
    for split, result in flatten_eval(scores).items():
        for model, values in (("fine-tuned", result), ("baseline", theirs.get(split, {}))):
            rows.append([split, model, *(fmt(values.get(c)) for c in COLUMNS),
                         fmt(values.get("count"))])
    return Table(["split", "model", *COLUMNS, "rows"], rows)


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


def metrics_section(scores: dict, baseline: dict, paths: Paths) -> Section:
    """The comparison with the TF-IDF + logistic regression baseline."""
    return Section("Metrics: fine-tuned model vs baseline", [
        "Baseline: TF-IDF word n-grams + logistic regression on the same train split "
        f"(`{paths.baseline_metrics}`). Δ = fine-tuned − baseline (for loss, lower is better). "
        "Precision, recall and F1 are macro averages; loss is the mean cross-entropy.",
        comparison_table(scores, baseline), "All scores:", detail_table(scores, baseline)])


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
    mistakes = mistakes_table(run.predictions["text"].tolist(), truth, probs, labels,
                              cfg.report.mistakes)
    return Section("Test split: errors", [
        Image("confusion.png", to_png(confusion_figure(counts, labels,
                                                       "confusion matrix (test)")),
              "confusion matrix"),
        f"Precision-recall and ROC for {curves.name}: average precision "
        f"{curves.average_precision:.4f}, ROC AUC {curves.roc_auc:.4f}.",
        Image("pr_roc.png", pr_roc_figure(curves.pr, curves.roc, curves.name),
              "precision-recall and ROC curves"),
        f"The {len(mistakes.rows)} most confident mistakes (`report.mistakes` = "
        f"{cfg.report.mistakes}); probability is the model's for its predicted label:",
        mistakes])


DEPLOYMENTS = (("torch_fp32", "PyTorch fp32"), ("onnx_fp32", "ONNX fp32"),
               ("onnx_int8", "ONNX int8 (dynamic)"))


def ratio(numerator: float | None, denominator: float | None) -> str:
    """`2.41x`, or MISSING without both numbers."""
    return f"{numerator / denominator:.2f}x" if numerator and denominator else MISSING


def deployment_table(export: dict) -> Table:
    """Each backend's figures, and its speed against torch fp32 (above 1x is faster)."""
    torch_fp32 = export.get("torch_fp32", {})
    rows = []
    for key, name in DEPLOYMENTS:
        row = export.get(key)
        if not row:
            continue
        rows.append([name, fmt(row.get("accuracy")), fmt(row.get("latency_ms_b1"), 2),
                     fmt(row.get("latency_ms_b1_p95"), 2),
                     ratio(torch_fp32.get("latency_ms_b1"), row.get("latency_ms_b1")),
                     fmt(row.get("samples_per_second_b32"), 1),
                     ratio(row.get("samples_per_second_b32"),
                           torch_fp32.get("samples_per_second_b32")),
                     fmt(row.get("size_mb"), 1), fmt(row.get("max_abs_logit_diff"), None)])
    return Table(["backend", "test accuracy", "latency b1 p50 (ms)", "p95 (ms)", "b1 speed-up",
                  "samples/s b32", "b32 speed-up", "size (MB)", "max |Δ logit| vs torch"], rows)


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
            metrics_section(run.scores, run.baseline, cfg.paths),
            curves_section(run.scalars, cfg.paths), errors_section(run, cfg, curves),
            deployment_section(run, cfg.paths), data_section(run, cfg), what_ran(run, cfg)]
