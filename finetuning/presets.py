"""Named setups: `presets/<name>.yaml` holds the params.yaml overrides of one, and
`finetune preset <name>` (`make preset NAME=<name>`) runs it as the DVC experiment
`<name>`: `dvc exp run -n <name> -S key=value ...`, so the workspace ends with the
preset's params and outputs and `dvc exp show` / `dvc metrics diff` compare presets.

The overrides are checked with the stages' own validation before DVC runs anything.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from finetuning.config import Config, ConfigError, config_from_dict, read_params

PRESETS = Path("presets")


def available(folder: Path = PRESETS) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def read_preset(name: str, folder: Path = PRESETS) -> dict[str, Any]:
    """The overrides of preset `name`; a missing or malformed one names the choices."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no preset {name!r} ({path} not found); presets: "
                          f"{', '.join(available(folder)) or 'none'}")
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of params.yaml sections")
    return data


def merged(params: dict, overrides: dict) -> dict:
    """`params` with `overrides` laid over it, section by section (a dict-valued param,
    such as fetch.ood, is replaced whole, as `overrides` below tells DVC)."""
    out = dict(params)
    for key, value in overrides.items():
        nested = isinstance(value, dict) and isinstance(params.get(key), dict)
        out[key] = merged(params[key], value) if nested and key in SECTIONS else value
    return out


SECTIONS = {f.name for f in dataclasses.fields(Config)} | {"lora"}  # merged, not replaced


def overrides(preset: dict, cls: type = Config, prefix: str = "") -> list[str]:
    """`dvc exp run -S` arguments for `preset`: `key=<JSON value>` per leaf; a dict-valued
    param is deleted and added back (`~key`, `+key=...`): a plain `key={...}` would merge
    into the old one."""
    hints = typing.get_type_hints(cls)
    args = []
    for key, value in preset.items():
        hint, name = hints.get(key), f"{prefix}{key}"
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            args += overrides(value, hint, f"{name}.")
        elif isinstance(value, dict):
            args += [f"~{name}", f"+{name}={json.dumps(value, ensure_ascii=False)}"]
        else:
            args.append(f"{name}={json.dumps(value, ensure_ascii=False)}")
    return args


def check_committed(params_file: str | Path = "params.yaml") -> None:
    """Refuse a params file that differs from the last commit's: `dvc exp run -S` lays the
    preset over the workspace's params, so an earlier experiment's (say another
    preset's data) would leak into this one."""
    import subprocess

    differs = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(params_file)],
                             capture_output=True).returncode == 1  # else: not in git
    if differs:
        raise ConfigError(f"{params_file} differs from the last commit's (an applied "
                          "experiment, or edits): a preset is laid over the committed "
                          f"params, so commit yours or restore them first (`git checkout "
                          f"{params_file}`)")


def experiment_command(name: str, params_file: str | Path = "params.yaml",
                       folder: Path = PRESETS) -> list[str]:
    """The `dvc exp run` command of preset `name`, after checking the params it makes."""
    preset = read_preset(name, folder)
    try:
        config_from_dict(merged(read_params(params_file), preset))
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{folder / f'{name}.yaml'}: {err}") from None
    return ["dvc", "exp", "run", "-n", name, *(a for o in overrides(preset) for a in ("-S", o))]
