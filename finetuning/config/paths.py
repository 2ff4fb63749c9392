"""Where stages may write: every `paths.*` inside the project, clear of its code and of
each other.

Stages replace and delete what these keys name (atomic output folders, a fresh TensorBoard
log, cleared checkpoints), so `paths.tensorboard: flows` would delete source code and
`paths.checkpoints: /` much worse. A path may be relative (to the folder the stages run
in, the repository root) or absolute, but must lie inside the folder of params.yaml
(links are not followed: a `data` link to another disk is fine).
"""
from __future__ import annotations

import os
from dataclasses import fields
from itertools import combinations
from pathlib import Path

from finetuning.config.sections import Paths
from finetuning.errors import ConfigError

# The project's own files and folders: code, tests, configuration, tooling, history.
PROTECTED = (".ci", ".dvc", ".dvcignore", ".git", ".gitignore", ".venv", "Makefile",
             "README.md", "benchmarks", "dvc.lock", "dvc.yaml", "dvc_plots", "finetuning",
             "flows", "params.yaml", "prefect.yaml", "presets", "pyproject.toml", "scripts",
             "stages", "tests")


def absolute(path: str | Path) -> Path:
    """`path` made absolute and normalised (`..` folded) without following links, so a
    `data` link to a bigger disk stays inside the project."""
    return Path(os.path.abspath(path))


def check_paths(paths: Paths, root: str | Path) -> None:
    """Raise ConfigError naming the key if a path leaves `root`, lies in (or is) one of
    its protected entries, or overlaps another key's path."""
    root = absolute(root)
    resolved = {}
    for item in fields(paths):
        key, value = f"paths.{item.name}", getattr(paths, item.name)
        where = absolute(value)
        if root not in where.parents:
            raise ConfigError(f"{key}: {value!r} resolves to {where}, outside the project "
                              f"folder {root}; expected a path inside it, such as "
                              f"'logs/{item.name}'")
        top = where.relative_to(root).parts[0]
        if top in PROTECTED:
            raise ConfigError(f"{key}: {value!r} is inside {top!r}, part of the project "
                              "itself (stages replace and delete their outputs); expected "
                              "a path of its own, such as 'models/' or 'logs/'")
        resolved[key] = where
    for (one, a), (other, b) in combinations(resolved.items(), 2):
        if a == b or a in b.parents or b in a.parents:
            raise ConfigError(f"{one} ({a}) and {other} ({b}) overlap; each output needs "
                              "its own path")
