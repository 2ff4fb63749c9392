"""Build frozen dataclasses from plain mappings, checking every key and type on the way.

Unknown keys, missing required keys and wrong types raise `ConfigError` naming the dotted
key (`train.learning_rate`) and what is allowed; each dataclass's own `validate()` then
checks ranges.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from finetuning.errors import ConfigError


# Keys that were params once, and where their setting lives now.
MOVED = {f"train.{key}": f"the train stage's {option} option (or {var}): the topology "
         "describes machines, not an experiment, and params.yaml must not differ between "
         "the nodes of one run"
         for key, option, var in (("num_processes", "--nproc-per-node", "PET_NPROC_PER_NODE"),
                                  ("nnodes", "--nnodes", "PET_NNODES"),
                                  ("node_rank", "--node-rank", "PET_NODE_RANK"),
                                  ("rdzv_endpoint", "--master-addr/--master-port",
                                   "PET_MASTER_ADDR/PET_MASTER_PORT"))}


def check(ok: bool, key: str, allowed: str, value: Any) -> None:
    """Raise a ConfigError saying `key` must be `allowed` unless `ok`."""
    if not ok:
        raise ConfigError(f"params: {key} must be {allowed}, got {value!r}")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if hint is float:
        check(isinstance(value, (int, float)) and not isinstance(value, bool), key, "a number",
              value)
        return float(value)
    if hint in (int, str, bool):
        ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        check(ok, key, f"of type {hint.__name__}", value)
        return value
    if origin is list:
        check(isinstance(value, list), key, "a list", value)
        (item,) = typing.get_args(hint)
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        check(isinstance(value, dict), key, "a mapping", value)
        _, item = typing.get_args(hint)
        return {str(k): coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported hint {hint} for {key}")
    return build(hint, value, key)


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown and missing keys."""
    raw = {} if raw is None else raw
    check(isinstance(raw, dict), prefix or "params.yaml", "a mapping", raw)
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    scope = f" in {prefix}" if prefix else ""
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            if where in MOVED:
                raise ConfigError(f"params: {where} is no longer a param: use {MOVED[where]}")
            raise ConfigError(f"params: unknown key {where!r}; allowed keys{scope}: "
                              f"{', '.join(sorted(names))}")
    values = {k: coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and f.name not in raw]
    if required:
        raise ConfigError(f"params: missing key(s){scope}: {', '.join(required)}")
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj
