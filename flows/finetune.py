"""Prefect flow `finetune`: run the DVC pipeline as one task run per stage.

DVC decides what runs. The flow writes the run's parameter overrides into params.yaml,
checks them with the stages' own validation (`finetune check-params`), then takes the
stages of dvc.yaml in the order `dvc repro` would: a stage `dvc status` finds up to date
ends as `Cached`, any other is run with `dvc repro --single-item <stage>`. The run is
recorded with `dvc exp save`, so `dvc exp show` and `dvc metrics diff` compare it.
Nothing here imports model code or DVC's internals: only dvc's command line and files.

    python -m flows.finetune --learning-rate 3e-5 --set train.epochs=1   # one local run
    python -m flows.finetune serve                    # serve the deployment finetune/main
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, State
from ruamel.yaml import YAML

from flows.dvc_pipeline import (dvc_env, git_files, read_pipeline, repo_root, run_dvc,
                                stale_stages)
from flows.guard import ALLOW_ENV, check_deployment_run
from flows.overrides import apply_overrides, collect_overrides, parse_assignment

PARAMS_FILE = "params.yaml"
SUMMARY_FILE = "summary.md"  # written by the report stage into params.yaml paths.reports
ARTIFACT_KEY = "finetune-metrics"
# Lines of a failed stage's output carried into the exception (and so the flow run's
# state message); the full output is already in the task run's logs.
ERROR_TAIL_LINES = 40

log = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero."""


class ParamsRejected(ValueError):
    """params.yaml (with the run's overrides) does not validate."""


def check_params(repo: Path, logger: logging.LoggerAdapter, params: str = PARAMS_FILE
                 ) -> None:
    """Validate params.yaml (or `params`, in `repo`) with the stages' own checker before
    any stage runs: DVC deletes a stage's outputs before its command starts, so a value
    rejected by the stage itself would cost the previous good outputs."""
    result = subprocess.run([sys.executable, "-m", "finetuning", "check-params", "--params",
                             params], cwd=repo, env=dvc_env(), capture_output=True, text=True)
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
def reproduce_stage(stage: str, repo: Path, stale: bool | None) -> State:
    """Reproduce one DVC stage, or end `Cached` when it is up to date. `stale` is what the
    pipeline's `dvc status` found (True: changed, False: up to date), or None when an
    upstream stage ran since, so the stage's own status decides.

    Returning a state makes it the task run's final state (and what the caller gets
    back), so the UI shows which stages really ran.
    """
    logger = get_run_logger()
    if stale is None:
        stale = bool(stale_stages(repo, stage))
    if not stale:
        logger.info("stage %r is up to date", stage)
        return Completed(name="Cached", message=f"stage {stage!r} was up to date")
    code, output = run_dvc(["repro", "--single-item", stage], repo, logger)
    if code != 0:
        tail = "\n".join(deque(output.splitlines(), maxlen=ERROR_TAIL_LINES))
        raise StageFailed(f"stage {stage!r} failed (dvc exit code {code}):\n{tail}")
    return Completed(message=f"stage {stage!r} ran (or was restored from DVC's run cache)")


def run_each_stage(root: Path, logger: logging.LoggerAdapter) -> dict[str, str]:
    """Every stage in order, each its own task run. One `dvc status` of the whole pipeline
    says what is stale now; a stage it found up to date is asked again only once one of
    its upstream stages has run (and may have changed its inputs)."""
    pipeline = read_pipeline(root)
    logger.info("Pipeline in %s: %s", root, " -> ".join(pipeline.order))
    stale, outcomes = stale_stages(root), {}
    for stage in pipeline.order:
        upstream_ran = any(outcomes[up] == "ran" for up in pipeline.upstream[stage])
        known = True if stage in stale else None if upstream_ran else False
        state = reproduce_stage(stage, root, known)
        outcomes[stage] = "cached" if state.name == "Cached" else "ran"
    return outcomes


def experiment_name() -> str:
    """The flow run's name as a DVC experiment name (a git ref: no spaces and such)."""
    name = flow_run.get_name() or "finetune"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "finetune"


def run_summary(repo: Path, experiment: str, outcomes: dict[str, str]) -> str:
    """The run's artifact: the report's summary and metrics, what ran, where things are."""
    paths = (YAML(typ="safe").load((repo / PARAMS_FILE).read_text()) or {}).get("paths", {})
    lines = [f"# finetune run `{experiment}`", ""]
    summary = repo / paths["reports"] / SUMMARY_FILE if "reports" in paths else None
    if summary and summary.is_file():
        lines += [summary.read_text(encoding="utf-8").strip(), ""]
    else:
        lines += ["No report: params.yaml `paths.reports` holds no summary.md.", ""]
    lines.append("Stages: " + ", ".join(f"{name} ({state})" for name, state in outcomes.items()))
    for label, key in (("Report", "reports"), ("Model", "finetuned")):
        if key in paths:
            lines.append(f"{label}: `{repo / paths[key]}`")
    lines += ["", f"Recorded as DVC experiment `{experiment}`: compare with `dvc exp show` "
              f"or `dvc metrics diff HEAD {experiment}`."]
    return "\n".join(lines) + "\n"


def run_with_overrides(root: Path, changes: dict[str, Any], logger: logging.LoggerAdapter
               ) -> dict[str, str]:
    """Apply the overrides, validate, reproduce every stage; restore params.yaml if any
    of it fails (a rejected value left behind would poison the next run)."""
    params_path = root / PARAMS_FILE
    original = params_path.read_text()
    if changes:
        apply_overrides(params_path, changes)
        logger.info("params.yaml overrides: %s", changes)
    try:
        check_params(root, logger)
        outcomes = run_each_stage(root, logger)
    except BaseException:
        if changes:
            params_path.write_text(original)
            logger.info("Restored %s after the failed run", PARAMS_FILE)
        raise
    return outcomes


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
    root = repo_root(repo or os.getcwd())
    changes = collect_overrides(overrides, learning_rate=learning_rate, epochs=epochs,
                                model=model, data=data)
    if deployment.id is not None:  # anyone who reaches the API can start these
        check_deployment_run(root, repo_root(os.getcwd()), changes)
    outcomes = run_with_overrides(root, changes, logger)
    experiment = experiment_name()
    include = [arg for path in git_files(root) for arg in ("-I", path)]
    code, output = run_dvc(["exp", "save", "--name", experiment, "--force", *include], root,
                           logger)
    if code != 0:
        raise RuntimeError(f"dvc exp save failed (exit code {code}):\n{output}")
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=run_summary(root, experiment, outcomes),
                             description="Metrics of the finetune run and where its report "
                             "and model are")
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
    parser.add_argument(
        "--allow-any-override",
        action="store_true",
        help=f"serve: let deployment runs set paths.*, another repo and local sources "
        f"outside this checkout (sets {ALLOW_ENV}=1; by default they are refused)",
    )
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
        if args.allow_any_override:
            os.environ[ALLOW_ENV] = "1"
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
