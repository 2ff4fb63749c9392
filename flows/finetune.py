"""Prefect flow `finetune`: run the DVC pipeline as one task run per stage.

DVC decides what runs. The flow writes the run's parameter overrides into
params.yaml, calls `dvc repro --single-item <stage>` for every stage of dvc.yaml
in the order `dvc repro` itself would use, reports stages DVC skipped as
`Cached`, and records the run with `dvc exp save` so `dvc exp show` and
`dvc metrics diff` can compare it. Nothing here imports model code.

    python -m flows.finetune --learning-rate 3e-5 --set train.epochs=1   # one local run
    python -m flows.finetune serve                    # serve the deployment finetune/main
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from dvc.repo import Repo
from dvc.repo.reproduce import plan_repro
from dvc.stage import PipelineStage
from dvc.stage.utils import _get_stage_files
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State
from ruamel.yaml import YAML
from ruamel.yaml.representer import RoundTripRepresenter

PARAMS_FILE = "params.yaml"
# What the summary artifact reads, as keys of params.yaml `paths:` (where the
# pipeline declares its paths once), with DESIGN.md's locations as fallbacks.
SUMMARY_PATHS = {
    "eval_metrics": "metrics/eval.json",
    "baseline_metrics": "metrics/baseline.json",
    "reports": "reports",
    "finetuned": "models/finetuned",
}
REPORT_FILE = "report.html"
METRIC_COLUMNS = ("accuracy", "precision", "recall", "f1", "loss")
ARTIFACT_KEY = "finetune-metrics"
# Flow parameters that are shorthands for params.yaml keys.
KNOBS = {
    "learning_rate": "train.learning_rate",
    "epochs": "train.epochs",
    "model": "fetch.model",
    "data": "fetch.data",
}
# Lines of a failed stage's output carried into the exception (and so the flow
# run's state message); the full output is already in the task run's logs.
ERROR_TAIL_LINES = 40

log = logging.getLogger(__name__)


class _FloatRepresenter(RoundTripRepresenter):
    """Write floats so that YAML 1.1 readers (PyYAML) also read them as floats.

    ruamel writes 3e-5 as `3e-05`, which PyYAML loads as a *string*; `3.0e-05`
    is a float to both. Subclassed so DVC's own ruamel dumper is left alone.
    """


def _represent_float(representer: RoundTripRepresenter, value: float) -> Any:
    if not math.isfinite(value):
        return RoundTripRepresenter.represent_float(representer, value)
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    if exponent and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


_FloatRepresenter.add_representer(float, _represent_float)


def _round_trip_yaml() -> YAML:
    yaml = YAML()  # round-trip mode keeps the file's comments and layout
    yaml.Representer = _FloatRepresenter
    yaml.preserve_quotes = True
    return yaml


def collect_overrides(
    overrides: dict[str, Any] | None, **knobs: Any
) -> dict[str, Any]:
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
            raise ValueError(
                f"{name}={value!r} conflicts with overrides[{key!r}]={merged[key]!r}"
            )
        merged[key] = value
    return merged


def apply_overrides(params_path: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys (`train.learning_rate`) in params.yaml, keeping its comments.

    Only keys already present may be set: a typo must fail here, before any
    stage runs, not be written as a new key that no stage reads.
    """
    yaml = _round_trip_yaml()
    params = yaml.load(params_path.read_text()) or {}
    for dotted, value in overrides.items():
        node = params
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:depth]) or "the top level"
                known = ", ".join(map(str, node)) if isinstance(node, dict) else "nothing"
                raise ValueError(
                    f"unknown params key {dotted!r}: {params_path.name} has no "
                    f"{part!r} under {where} (known: {known})"
                )
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


def read_pipeline(repo: Path) -> tuple[list[str], list[str]]:
    """The dvc.yaml stages in the order `dvc repro` runs them, and their git-side files.

    The files (dvc.yaml, dvc.lock, code and params deps, outputs with
    `cache: false` such as metrics) are what `dvc exp run` stages into an
    experiment; `dvc exp save` alone would leave the untracked ones out, and
    the experiment would have no metrics to show or diff. Paths are relative
    to `repo`.
    """
    with Repo(os.fspath(repo)) as dvc_repo:
        # plan_repro is how `dvc repro` orders stages; .dvc files (tracked
        # data) are not pipeline stages and have no command to run.
        stages = [
            stage
            for stage in plan_repro(dvc_repo.index.graph)
            if isinstance(stage, PipelineStage)
        ]
        files = {
            os.path.relpath(os.path.abspath(path), repo)
            for stage in stages
            for path in _get_stage_files(stage)
        }
    return [_address(stage, repo) for stage in stages], sorted(files)


def _address(stage: PipelineStage, repo: Path) -> str:
    """How `dvc repro` run in `repo` names the stage (`stage.addressing` is relative
    to the current directory, which need not be the repository)."""
    dvcfile = os.path.relpath(stage.path, repo)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def _dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    # Stage commands say `python ...`: make that this interpreter's venv,
    # whatever PATH the serving process was started with.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"  # stage output reaches the logs as it happens
    # A progress bar redrawn 10x a second would flood the run's logs.
    env.setdefault("TQDM_MININTERVAL", "30")
    return env


def run_dvc(args: list[str], repo: Path, logger: logging.LoggerAdapter) -> tuple[int, str]:
    """Run `dvc <args>` in `repo`, logging its output line by line.

    Returns the exit code and the whole output (stdout and stderr merged, so
    a stage's error message sits next to what it printed before failing).
    """
    command = [sys.executable, "-m", "dvc", *args]
    logger.info("$ dvc %s", " ".join(args))
    lines: list[str] = []
    with subprocess.Popen(
        command,
        cwd=repo,
        env=_dvc_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,  # universal newlines: a tqdm '\r' update becomes its own line
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line:
                lines.append(line)
                # DVC's own errors stand out in the UI; the stage's are in the exception.
                level = logging.ERROR if line.startswith("ERROR:") else logging.INFO
                logger.log(level, "%s", line)
    return process.returncode, "\n".join(lines)


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero."""


class ParamsRejected(ValueError):
    """params.yaml (with the run's overrides) does not validate."""


def check_params(repo: Path, logger: logging.LoggerAdapter) -> None:
    """Validate params.yaml with the stages' own checker before any stage runs: DVC
    deletes a stage's outputs before its command starts, so a value rejected by the
    stage itself would cost the previous good outputs."""
    result = subprocess.run([sys.executable, "-m", "stages.config", "--params", PARAMS_FILE],
                            cwd=repo, env=_dvc_env(), capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        logger.error("%s", message)
        raise ParamsRejected(message)


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=0,  # a failed training run is a result to look at, not a network blip
    cache_policy=NO_CACHE,  # DVC's cache decides what is up to date, not Prefect's
    persist_result=False,
)
def reproduce_stage(stage: str, repo: Path) -> State:
    """Reproduce one DVC stage; end in a `Cached` state if DVC skipped it.

    Returning a state makes it the task run's final state (and what the
    caller gets back), so the UI shows which stages really ran.
    """
    logger = get_run_logger()
    code, output = run_dvc(["repro", "--single-item", stage], repo, logger)
    if code != 0:
        tail = "\n".join(deque(output.splitlines(), maxlen=ERROR_TAIL_LINES))
        raise StageFailed(f"stage {stage!r} failed (dvc exit code {code}):\n{tail}")
    if f"Running stage '{stage}'" in output:
        return Completed(message=f"stage {stage!r} ran")
    # "didn't change, skipping" or "is cached - skipping run" (run-cache restore)
    return Completed(name="Cached", message=f"stage {stage!r} was up to date")


def _experiment_name() -> str:
    # Git ref names forbid spaces and some punctuation; Prefect run names
    # are usually adjective-animal but a user may pass any --flow-run-name.
    name = flow_run.get_name() or "finetune"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "finetune"


def _read_metrics(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _metric_rows(model: str, metrics: dict[str, Any]) -> list[list[str]]:
    splits = [(name, metrics[name]) for name in ("test", "validation") if name in metrics]
    splits += [(f"ood/{name}", values) for name, values in (metrics.get("ood") or {}).items()]
    rows = []
    for split, values in splits:
        cells = [
            f"{values[column]:.4f}" if isinstance(values.get(column), (int, float)) else "–"
            for column in METRIC_COLUMNS
        ]
        rows.append([model, split, *cells])
    return rows


def summary_paths(repo: Path) -> dict[str, Path]:
    """Absolute SUMMARY_PATHS, as declared in params.yaml `paths:` if it has them."""
    params = YAML(typ="safe").load((repo / PARAMS_FILE).read_text()) or {}
    declared = params.get("paths") or {}
    return {key: repo / declared.get(key, default) for key, default in SUMMARY_PATHS.items()}


def metrics_markdown(repo: Path, experiment: str, outcomes: dict[str, str]) -> str:
    """The run's summary: metrics table (with the baseline if any) and output locations."""
    paths = summary_paths(repo)
    rows = []
    for model, key in (("finetuned", "eval_metrics"), ("baseline", "baseline_metrics")):
        metrics = _read_metrics(paths[key])
        if metrics is not None:
            rows += _metric_rows(model, metrics)
    header = ["model", "split", *METRIC_COLUMNS]
    lines = [f"# finetune run `{experiment}`", ""]
    if rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        lines.append(f"No metrics: `{paths['eval_metrics']}` was not written.")
    lines += ["", "Stages: " + ", ".join(f"{name} ({state})" for name, state in outcomes.items())]
    for label, path in (("Report", paths["reports"] / REPORT_FILE), ("Model", paths["finetuned"])):
        lines.append(f"{label}: `{path}`" + ("" if path.exists() else " (not produced)"))
    lines += [
        "",
        f"Recorded as DVC experiment `{experiment}`: compare with `dvc exp show` "
        f"or `dvc metrics diff HEAD {experiment}`.",
    ]
    return "\n".join(lines) + "\n"


@flow(name="finetune", retries=0)
def finetune(
    learning_rate: float | None = None,
    epochs: int | None = None,
    model: str | None = None,
    data: str | None = None,
    overrides: dict[str, Any] | None = None,
    repo: str | None = None,
) -> dict[str, str]:
    """Run the DVC pipeline with params.yaml overrides; return {stage: "ran" or "cached"}.

    Args:
        learning_rate: sets `train.learning_rate`.
        epochs: sets `train.epochs`.
        model: sets `fetch.model` (a Hugging Face id or a local folder).
        data: sets `fetch.data` (a Hugging Face dataset id or a local file/folder).
        overrides: any other params.yaml keys, dotted (`{"train.batch_size": 16}`).
        repo: the DVC repository (any folder inside it); default: the working directory.

    The overrides stay in params.yaml after a successful run, as with
    `dvc exp run`, so the workspace matches dvc.lock; a failed run restores it.
    """
    logger = get_run_logger()
    root = Path(Repo.find_root(repo or os.getcwd()))
    changes = collect_overrides(
        overrides, learning_rate=learning_rate, epochs=epochs, model=model, data=data
    )
    stages, stage_files = read_pipeline(root)
    logger.info("Pipeline in %s: %s", root, " -> ".join(stages))

    params_path = root / PARAMS_FILE
    original = params_path.read_text()
    if changes:
        apply_overrides(params_path, changes)
        logger.info("params.yaml overrides: %s", changes)
    outcomes: dict[str, str] = {}
    try:
        check_params(root, logger)
        for stage in stages:
            state = reproduce_stage(stage, root)
            outcomes[stage] = "cached" if state.name == "Cached" else "ran"
    except BaseException:
        # Leaving a rejected value in params.yaml would poison the next run
        # that does not override it.
        if changes:
            params_path.write_text(original)
            logger.info("Restored %s after the failed run", PARAMS_FILE)
        raise

    experiment = _experiment_name()
    include = [arg for path in stage_files if (root / path).exists() for arg in ("-I", path)]
    save = ["exp", "save", "--name", experiment, "--force", *include]
    code, output = run_dvc(save, root, logger)
    if code != 0:
        raise RuntimeError(f"dvc exp save failed (exit code {code}):\n{output}")
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=metrics_markdown(root, experiment, outcomes),
        description="Metrics of the finetune run and where its report and model are",
    )
    return outcomes


def build_parser() -> argparse.ArgumentParser:
    """Command line of `python -m flows.finetune`."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.finetune",
        description=(
            "Run the DVC pipeline as the Prefect flow 'finetune' (one task run per "
            "stage; DVC skips stages that are up to date), or serve it as the "
            "deployment 'finetune/main'."
        ),
        epilog=(
            "Examples:\n"
            "  python -m flows.finetune --learning-rate 3e-5 --set train.batch_size=16\n"
            "  python -m flows.finetune serve\n"
            "  prefect deployment run finetune/main -p learning_rate=3e-5 --watch"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "serve"),
        default="run",
        help="run (default): one flow run now, in this process; it reports to "
        "PREFECT_API_URL if set, else to a temporary local server. "
        "serve: register deployment finetune/main and execute its runs, one at a time; "
        "the options below then become the deployment's default parameters.",
    )
    parser.add_argument("--learning-rate", type=float, help="sets train.learning_rate")
    parser.add_argument("--epochs", type=int, help="sets train.epochs")
    parser.add_argument("--model", help="sets fetch.model (Hugging Face id or local folder)")
    parser.add_argument("--data", help="sets fetch.data (Hugging Face id or local path)")
    parser.add_argument(
        "--set",
        dest="overrides",
        type=parse_assignment,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any params.yaml key, dotted (repeatable); VALUE is read as YAML",
    )
    parser.add_argument("--repo", help="the DVC repository (default: the working directory)")
    parser.add_argument("--name", default="main", help="deployment name for serve (default: main)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m flows.finetune`; returns the exit code."""
    args = build_parser().parse_args(argv)
    parameters = {
        "learning_rate": args.learning_rate,
        "epochs": args.epochs,
        "model": args.model,
        "data": args.data,
        "overrides": dict(args.overrides) or None,
        "repo": args.repo,
    }
    parameters = {key: value for key, value in parameters.items() if value is not None}
    if args.command == "serve":
        finetune.serve(
            name=args.name,
            parameters=parameters,
            # global_limit is the deployment's concurrency limit (server-side,
            # across every runner); limit caps this process too.
            global_limit=1,
            limit=1,
        )
        return 0
    state = finetune(**parameters, return_state=True)
    if not state.is_completed():  # failed, crashed or cancelled
        log.error("flow run %s: %s", state.name, state.message)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
