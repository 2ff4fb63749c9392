"""Atomic outputs that land together: a stage writes each output beside its target and,
once all are complete, moves them into place in one short commit, so a failed stage never
leaves a half-written file or folder, nor a mix of new and old outputs, that the next
stage could read.

The commit first writes a journal (which staged path replaces which target), then
renames. A kill during the renames leaves the journal; `recover` (every stage runs it
before anything else) finishes the renames, so what a stage reads is all of one run.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL = ".{}.commit.json"  # beside the first target of the commit


def _umask_mode(mode: int) -> int:
    """`mode` less the process umask: mkdtemp/mkstemp create private (0700/0600) paths."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


class Outputs:
    """The outputs a stage stages: each `dir`/`file` is a temporary path beside its target."""

    def __init__(self) -> None:
        self.moves: list[tuple[Path, Path]] = []
        self.journal: Path | None = None  # written: the moves belong to `finish`

    def dir(self, target: str | Path) -> Path:
        """An empty folder that will replace `target`."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(tmp, _umask_mode(0o777))
        self.moves.append((tmp, target))
        return tmp

    def file(self, target: str | Path) -> Path:
        """A new empty file that will replace `target`."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.close(fd)
        os.chmod(tmp, _umask_mode(0o666))
        self.moves.append((Path(tmp), target))
        return Path(tmp)

    def json(self, target: str | Path, data: Any) -> None:
        """`data` as stable, human-diffable JSON (sorted keys) that will replace `target`."""
        self.file(target).write_text(dumps(data), encoding="utf-8")


@contextlib.contextmanager
def stage_outputs() -> Iterator[Outputs]:
    """Stage outputs in the block; commit them together if it succeeds, else drop them
    (the previous outputs stay)."""
    outputs = Outputs()
    try:
        yield outputs
        commit(outputs)
    finally:
        if outputs.journal is None:  # after the journal, what is left is `recover`'s
            for tmp, _ in outputs.moves:
                _remove(tmp)


def commit(outputs: Outputs) -> None:
    """Write the journal of the staged moves, then carry them out."""
    if not outputs.moves:
        return
    first = outputs.moves[0][1]
    journal = first.parent / JOURNAL.format(first.name)
    fd, tmp = tempfile.mkstemp(prefix=f"{journal.name}.tmp-", dir=journal.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump([[str(s.absolute()), str(t.absolute())] for s, t in outputs.moves], handle)
    os.replace(tmp, journal)
    outputs.journal = journal
    finish(journal)


def finish(journal: Path) -> None:
    """Move every staged path of `journal` still waiting onto its target; drop the journal.
    Safe to repeat: a move already made is skipped."""
    for staged, target in (map(Path, pair) for pair in json.loads(journal.read_text())):
        old = target.with_name(f".{target.name}.old")
        if os.path.lexists(staged):
            _remove(old)
            if target.is_dir() and not target.is_symlink():
                os.replace(target, old)  # a folder cannot be renamed over a folder
            os.replace(staged, target)
        _remove(old)
    journal.unlink()


def recover(targets: Iterable[str | Path]) -> None:
    """Finish any commit a killed stage left beside `targets` (the params' paths)."""
    folders = {Path(t).absolute().parent for t in targets}
    for journal in sorted(j for f in folders if f.is_dir() for j in f.glob(JOURNAL.format("*"))):
        log.warning("finishing the outputs of a stage killed while committing them (%s)",
                    journal)
        finish(journal)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `target` only if the block succeeds."""
    with stage_outputs() as outputs:
        yield outputs.dir(target)


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file that replaces `target` only if the block succeeds."""
    with stage_outputs() as outputs:
        tmp = outputs.file(target)
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle


def dumps(data: Any) -> str:
    """Stable, human-diffable JSON (sorted keys), newline-terminated."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(target: str | Path, data: Any) -> None:
    """Write `data` as stable, human-diffable JSON (sorted keys), atomically."""
    with stage_outputs() as outputs:
        outputs.json(target, data)


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by `write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
