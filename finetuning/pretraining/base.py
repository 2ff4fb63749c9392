"""Which folder is the base that tokenize and train use.

The pretrain stage always writes `paths.pretrained`. With pretraining (or a scratch
base) it is a model folder; with `pretrain.steps: 0` on a fetched base it is only a
pointer file, so the default pipeline copies no weights and loads no model for it.
Nothing here imports torch: the pass-through must cost nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

from finetuning.errors import StageError

POINTER = "base.json"         # in paths.pretrained: "use the fetched base as it is"
SCRATCH_MARK = "scratch.json"  # in paths.base_model: fetch.model was `scratch`


def write_pointer(folder: Path, fetched: Path) -> None:
    """Say in `folder` that the fetched base is the base (what it was is in fetch's
    provenance; tokenize and train depend on the fetched folder themselves)."""
    (folder / POINTER).write_text(json.dumps(
        {"base": "fetched", "folder": fetched.as_posix(), "pretrain_steps": 0}, indent=2)
        + "\n", encoding="utf-8")


def write_scratch_mark(folder: Path) -> dict:
    """fetch's output for `fetch.model: scratch`: nothing to fetch, a note saying so."""
    note = {"source": "scratch", "built_by": "the pretrain stage, from params.yaml scratch:"}
    (folder / SCRATCH_MARK).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return note


def is_scratch(fetched: str | Path) -> bool:
    """Whether the fetched base is only the scratch note."""
    return (Path(fetched) / SCRATCH_MARK).is_file()


def base_of(paths) -> Path:
    """The base model folder for tokenize and train: pretrain's model folder when it
    wrote one, else the fetched base (pretrain passed it through, or a workspace whose
    stages were run by hand without pretrain)."""
    pretrained, fetched = Path(paths.pretrained), Path(paths.base_model)
    if (pretrained / "config.json").is_file():
        return pretrained
    if is_scratch(fetched):
        raise StageError(f"{fetched} is a scratch note, not a model, and {pretrained} holds "
                         "no model: run the pretrain stage first (`dvc repro pretrain`)")
    return fetched


def has_trained_pooler(folder: str | Path) -> bool:
    """Whether a base checkpoint holds pooler weights (one pretrained with masked LM
    alone has none: its pooler starts random)."""
    from safetensors import safe_open

    for path in Path(folder).glob("*.safetensors"):
        with safe_open(str(path), "np") as weights:
            if any(".pooler." in f".{key}" for key in weights.keys()):
                return True
    return False
