"""Tables of a run's records, shared by the report and the model card."""
from __future__ import annotations

import dataclasses

from finetuning.config import Config
from finetuning.reporting.document import MISSING, Table, fmt
from finetuning.reporting.records import flatten_eval

COLUMNS = ("accuracy", "precision", "recall", "f1", "mcc", "loss", "ece")
HEADLINE = ("accuracy", "f1", "loss")
DEPLOYMENTS = (("torch_fp32", "PyTorch fp32"), ("onnx_fp32", "ONNX fp32"),
               ("onnx_int8", "ONNX int8 (dynamic)"))


def key_params(cfg: Config) -> Table:
    """The params that shape the result (dvc.yaml lists exactly these for the stage)."""
    rows = [["prepare.labels", ", ".join(cfg.prepare.labels)],
            ["prepare.max_rows", fmt(cfg.prepare.max_rows)],
            ["prepare.text_pair_column", cfg.prepare.text_pair_column or "(single texts)"],
            ["tokenize.max_length", fmt(cfg.tokenize.max_length)],
            ["tokenize.truncation", cfg.tokenize.truncation + (
                f" ({cfg.tokenize.head_tokens} head tokens)"
                if cfg.tokenize.truncation == "head+tail" else "")]]
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
    rows = [("parameters", train.get("num_parameters")),
            ("method", train.get("method")),
            ("trainable parameters", train.get("trainable_parameters")),
            ("adapter size (MB)", train.get("adapter_mb")),
            ("optimizer steps", train.get("steps")),
            ("epochs", train.get("epochs")),
            ("train wall time (s)", train.get("train_seconds")),
            ("samples/s", train.get("samples_per_second")),
            ("tokens/s", train.get("tokens_per_second")),
            ("device", f"{train.get('device')} x{train.get('world_size')}"),
            ("precision", train.get("precision")),
            ("final train loss", train.get("final_train_loss")),
            ("final train accuracy", train.get("final_train_accuracy")),
            ("stopped early", train.get("stopped_early")),
            ("weights kept", f"step {train.get('selected_step')}: {train.get('selected_by')}"),
            ("temperature", train.get("calibration", {}).get("temperature")),
            ("class weights", ", ".join(f"{k} {v:g}" for k, v in
                                        train.get("class_weights", {}).items()) or "none")]
    return Table(["figure", "value"], [[name, fmt(value, None)] for name, value in rows])


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


def dropped_table(prepared: dict) -> Table:
    """Rows the prepare stage dropped per source: empty texts, texts that carry more than
    one label (every row of them), repeats of a text, and texts of the source's own train
    (validation) split also in a later split."""
    kinds = ("empty", "conflicting_labels", "duplicate", "in_another_split")
    return Table(["source", "empty", "conflicting labels", "duplicate", "in another split"],
                 [[source, *(fmt(counts.get(kind)) for kind in kinds)]
                  for source, counts in prepared.get("dropped", {}).items()])


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


def class_table(classes: dict) -> Table:
    """Per split and class: precision, recall, F1 and support."""
    rows = [[split, name, fmt(c["precision"]), fmt(c["recall"]), fmt(c["f1"]),
             fmt(c["support"])]
            for split, per_class in flatten_eval(classes).items()
            for name, c in per_class.items()]
    return Table(["split", "class", "precision", "recall", "F1", "rows"], rows)


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
