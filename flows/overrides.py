"""A run's parameter overrides: merged from the flow's knobs and dotted keys, then written
into params.yaml (keeping its comments) the way `dvc exp run -S` writes them."""
from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

# Flow parameters that are shorthands for params.yaml keys.
KNOBS = {
    "learning_rate": "train.learning_rate",
    "epochs": "train.epochs",
    "model": "fetch.model",
    "data": "fetch.data",
}


def collect_overrides(overrides: dict[str, Any] | None, **knobs: Any) -> dict[str, Any]:
    """Merge the shorthand knobs (see KNOBS) into the dotted-key overrides.

    A knob left as None is not applied; a knob and an override of the same key
    with different values is an error rather than a silent precedence rule.
    """
    merged = dict(overrides or {})
    for name, value in knobs.items():
        if value is None:
            continue
        key = KNOBS[name]
        if key in merged and merged[key] != value:
            raise ValueError(f"{name}={value!r} conflicts with overrides[{key!r}]={merged[key]!r}")
        merged[key] = value
    return merged


def apply_overrides(params_path: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys (`train.learning_rate`) in params.yaml, keeping its comments.

    Only keys already present may be set: a typo must fail here, before any
    stage runs, not be written as a new key that no stage reads.
    """
    yaml = YAML()  # round-trip mode keeps the file's comments and layout
    yaml.preserve_quotes = True
    params = yaml.load(params_path.read_text()) or {}
    for dotted, value in overrides.items():
        node = params
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:depth]) or "the top level"
                known = ", ".join(map(str, node)) if isinstance(node, dict) else "nothing"
                raise ValueError(f"unknown params key {dotted!r}: {params_path.name} has no "
                                 f"{part!r} under {where} (known: {known})")
            if depth < len(parts) - 1:
                node = node[part]
        node[parts[-1]] = value
    buffer = io.StringIO()
    yaml.dump(params, buffer)
    params_path.write_text(buffer.getvalue())


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse `KEY=VALUE`; VALUE is read as YAML, like `dvc exp run -S`."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, YAML(typ="safe").load(raw)
