"""The DVC pipeline seen from outside, through dvc's command line and files only: where
the repository is, its stages in the order `dvc repro` runs them, which files a run
leaves in git, whether a stage is up to date, and running one."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

DOT_NODE = re.compile(r'^"([^"]+)";$', re.MULTILINE)
DOT_EDGE = re.compile(r'^"([^"]+)" -> "([^"]+)";$', re.MULTILINE)
TEMPLATE = re.compile(r"\$\{\s*([\w.-]+)\s*\}")
DEFAULT_PARAMS = "params.yaml"


class DvcFailed(RuntimeError):
    """A dvc command exited non-zero."""


def dvc_env() -> dict[str, str]:
    """The environment dvc and the stage commands run in."""
    env = dict(os.environ)
    # Stage commands say `python ...`: make that this interpreter's venv,
    # whatever PATH the serving process was started with.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"  # stage output reaches the logs as it happens
    # A progress bar redrawn 10x a second would flood the run's logs.
    env.setdefault("TQDM_MININTERVAL", "30")
    return env


def dvc_output(args: list[str], repo: Path) -> str:
    """Standard output of a quick `dvc <args>` in `repo`; DvcFailed with its error."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=dvc_env(),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise DvcFailed(f"dvc {' '.join(args)} failed (exit {result.returncode}): "
                        f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


def run_dvc(args: list[str], repo: Path, logger: logging.LoggerAdapter) -> tuple[int, str]:
    """Run `dvc <args>` in `repo`, logging its output line by line as it comes.

    Returns the exit code and the whole output (stdout and stderr merged, so a stage's
    error message sits next to what it printed before failing).
    """
    logger.info("$ dvc %s", " ".join(args))
    lines: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=repo, env=dvc_env(),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as process:
        assert process.stdout is not None
        for line in process.stdout:  # universal newlines: a tqdm '\r' update is a line
            line = line.rstrip()
            if line:
                lines.append(line)
                # DVC's own errors stand out in the UI; the stage's are in the exception.
                logger.log(logging.ERROR if line.startswith("ERROR:") else logging.INFO,
                           "%s", line)
    return process.returncode, "\n".join(lines)


def repo_root(start: str | Path) -> Path:
    """The root of the DVC repository that `start` is in (`dvc root`)."""
    start = Path(start).resolve()
    return (start / dvc_output(["root"], start).strip()).resolve()


@dataclass(frozen=True)
class Pipeline:
    """The stages in the order `dvc repro` runs them, and each stage's direct upstream."""

    order: list[str]
    upstream: dict[str, set[str]]


def read_pipeline(repo: Path) -> Pipeline:
    """The stages of `dvc dag --dot` in dependency order; stages that could run in either
    order keep dvc.yaml's. Tracked data (`.dvc` files) is not a stage."""
    dot = dvc_output(["dag", "--dot"], repo)
    nodes = [n for n in DOT_NODE.findall(dot) if not n.endswith(".dvc")]
    upstream: dict[str, set[str]] = {node: set() for node in nodes}
    for parent, child in DOT_EDGE.findall(dot):
        if child in upstream and parent in upstream:
            upstream[child].add(parent)
    order: list[str] = []
    while len(order) < len(nodes):
        order.append(next(n for n in nodes if n not in order and upstream[n] <= set(order)))
    return Pipeline(order, upstream)


def stale_stages(repo: Path, stage: str | None = None) -> set[str]:
    """Stages `dvc status` finds changed (deps, params or outs), of the whole pipeline or
    of one stage. A stage whose inputs an upstream stage has yet to rebuild looks up to
    date until then: ask again after an upstream stage ran."""
    args = ["status", "--json", *([stage] if stage else [])]
    return set(json.loads(dvc_output(args, repo) or "{}"))


def resolve(text: str, params: dict[str, Any]) -> str:
    """dvc.yaml's `${a.b}` templating, from params.yaml."""
    def lookup(match: re.Match) -> str:
        value: Any = params
        for part in match.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(f"dvc.yaml uses ${{{match.group(1)}}}, which "
                               f"{DEFAULT_PARAMS} does not define")
            value = value[part]
        return str(value)
    return TEMPLATE.sub(lookup, text)


def entries(items: list | None) -> list[tuple[str, dict]]:
    """dvc.yaml's list of paths, each a string or a one-key mapping of its options."""
    out = []
    for item in items or []:
        if isinstance(item, dict):
            ((path, options),) = item.items()
            out.append((path, options or {}))
        else:
            out.append((item, {}))
    return out


def git_files(repo: Path) -> list[str]:
    """What a run leaves for git rather than the DVC cache (what `dvc exp save` must take
    along even when untracked): dvc.yaml, dvc.lock, params.yaml, code and other deps that
    no stage produces, and outputs marked `cache: false` (metrics, plot data)."""
    yaml = YAML(typ="safe")
    params_file = repo / DEFAULT_PARAMS
    params = yaml.load(params_file.read_text()) if params_file.is_file() else {}
    stages = (yaml.load((repo / "dvc.yaml").read_text()) or {}).get("stages", {})
    cached, kept, deps = [], {"dvc.yaml", "dvc.lock", DEFAULT_PARAMS}, []
    for spec in stages.values():
        for key in ("outs", "metrics", "plots"):  # all three are cached unless marked
            for path, options in entries(spec.get(key)):
                path = resolve(path, params)
                if options.get("cache", True) is False:
                    kept.add(path)
                else:
                    cached.append(path)
        deps += [resolve(path, params) for path, _ in entries(spec.get("deps"))]
    produced = [Path(p) for p in cached]
    kept.update(d for d in deps if not any(Path(d).is_relative_to(p) for p in produced))
    return sorted(p for p in kept if (repo / p).exists())
