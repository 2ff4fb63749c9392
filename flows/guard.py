"""What a run started through the deployment may change.

A self-hosted Prefect API has no authentication by default: whoever reaches it can start
runs of `finetune/main` with any parameters. So a deployment run works in the checkout
it is served from (no other `repo`), may not move any `paths.*` output (stages delete and
replace their outputs), and may not point `fetch.data`, `fetch.model` or `fetch.ood.*` at
a local path outside that checkout (fetch would copy it into the DVC cache). Whoever
starts the server process or worker can lift this with FINETUNE_ALLOW_ANY_OVERRIDE=1
(`python -m flows.finetune serve --allow-any-override` sets it). Runs started locally,
not through a deployment, are the user's own and are not restricted.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ALLOW_ENV = "FINETUNE_ALLOW_ANY_OVERRIDE"
SOURCE_KEYS = ("fetch.data", "fetch.model")
SOURCE_PREFIXES = ("fetch.ood.",)


class RefusedOverride(ValueError):
    """A deployment run asked for something only the server's owner may allow."""


def leaves(key: str, value: Any) -> list[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value under `key`."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(f"{key}.{k}", v)]
    return [(key, value)]


def local_path(source: Any, root: Path) -> Path | None:
    """The local path a source string names (resolved against `root`), or None for a
    registry entry or a Hugging Face id (the fetch stage's own reading of sources)."""
    if not isinstance(source, str) or source.startswith("registry:"):
        return None
    path = Path(source).expanduser()
    if source.startswith(("/", ".", "~")) or (root / path).exists():
        return (root / path).resolve()
    return None


def refusal(key: str, value: Any, root: Path) -> str | None:
    """Why a deployment run may not set `key` to `value`, or None."""
    if key == "paths" or key.startswith("paths."):
        return (f"{key}: a deployment run may not move the pipeline's outputs (the stages "
                "delete and replace what paths.* name)")
    if key in SOURCE_KEYS or key.startswith(SOURCE_PREFIXES):
        path = local_path(value, root)
        if path is not None and not path.is_relative_to(root):
            return (f"{key}={value!r}: a deployment run may only read local sources inside "
                    f"its checkout {root}")
    return None


def check_deployment_run(root: Path, served: Path, changes: dict[str, Any]) -> None:
    """Refuse (RefusedOverride naming the key) what a deployment run may not do."""
    if os.environ.get(ALLOW_ENV) == "1":
        return
    if root != served:
        raise RefusedOverride(f"repo {str(root)!r}: a deployment run works in the checkout it "
                              f"is served from ({served}); set {ALLOW_ENV}=1 where the server "
                              "or worker runs to allow others")
    for key, value in changes.items():
        for leaf, leaf_value in leaves(key, value):
            reason = refusal(leaf, leaf_value, root)
            if reason:
                raise RefusedOverride(f"refused override {reason}; set {ALLOW_ENV}=1 where "
                                      "the server or worker runs to allow it")
