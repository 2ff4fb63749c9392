"""Typed, validated view of params.yaml: one frozen dataclass per section, checked once.

    sections.py  the sections (paths, fetch, prepare, tokenize, train, ...) and their ranges
    checks.py    building dataclasses from mappings: unknown keys, types, missing keys
    paths.py     `paths.*` inside the project, clear of its code and of each other

An unknown key, a wrong type or an out-of-range value raises `ConfigError` naming the key
(`train.learning_rate`) and what is allowed, so a typo never silently falls back to a
default. params.yaml is read as YAML 1.2, as DVC reads it: `3e-05` (how DVC writes
`-S train.learning_rate=3e-5`) is a number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from finetuning.config.checks import build, check
from finetuning.config.paths import check_paths
from finetuning.config.pretraining import SCRATCH, Pretrain, Scratch
from finetuning.config.sections import (OOD_PREFIX, SOURCE_FILE, Baseline, Evaluate, Export,
                                        Fetch, Lora, Paths, Prepare, Report, Tensorboard,
                                        Tokenize, Train)
from finetuning.errors import ConfigError

__all__ = ["OOD_PREFIX", "PARAMS_FILE", "SCRATCH", "SOURCE_FILE", "Baseline", "Config",
           "ConfigError", "Evaluate", "Export", "Fetch", "Lora", "Paths", "Prepare", "Pretrain",
           "Report", "Scratch", "Tensorboard", "Tokenize", "Train", "config_from_dict",
           "load_config", "read_params"]

PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Config:
    """The whole of params.yaml; `paths` is required, every other section has defaults."""

    paths: Paths
    fetch: Fetch = field(default_factory=Fetch)
    prepare: Prepare = field(default_factory=Prepare)
    pretrain: Pretrain = field(default_factory=Pretrain)
    scratch: Scratch = field(default_factory=Scratch)
    tokenize: Tokenize = field(default_factory=Tokenize)
    train: Train = field(default_factory=Train)
    tensorboard: Tensorboard = field(default_factory=Tensorboard)
    evaluate: Evaluate = field(default_factory=Evaluate)
    export: Export = field(default_factory=Export)
    baseline: Baseline = field(default_factory=Baseline)
    report: Report = field(default_factory=Report)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a params mapping (as read from params.yaml) into a `Config`."""
    return check_across(build(Config, raw, ""))


def check_across(cfg: Config) -> Config:
    """The checks that span sections (each section checks its own keys)."""
    check(not cfg.prepare.text_pair_column or cfg.tokenize.truncation == "head",
          "tokenize.truncation", "head when prepare.text_pair_column is set (a pair is cut "
          "longest-first, from the end of the longer text)", cfg.tokenize.truncation)
    check(cfg.fetch.model != SCRATCH or cfg.pretrain.max_length <= cfg.scratch.max_positions,
          "pretrain.max_length", f"<= scratch.max_positions ({cfg.scratch.max_positions})",
          cfg.pretrain.max_length)
    return cfg


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as plain data, parsed as YAML 1.2 (DVC's reading)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found (run from the repository root)")
    try:
        return YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
    except YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err


def load_config(path: str | Path = PARAMS_FILE) -> Config:
    """Read and validate params.yaml (its `paths` inside the folder it is in); raise
    ConfigError naming the file and key on failure."""
    raw = read_params(path)
    try:
        cfg = config_from_dict(raw)
        check_paths(cfg.paths, Path(path).parent)
        return cfg
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
