"""Prefect flows `sweep` and `sweep-trial`: many finetune runs at once, spread over the
workers of a work pool.

    prefect deployment run sweep/main -p 'grid={"train.learning_rate": [1e-4, 3e-4]}' --watch

`sweep` expands a grid (every combination of the values) or takes a list of trials (each
a mapping of overrides), checks every trial's params with the stages' own validation
before any starts, then runs each trial as a run of the deployment `sweep-trial/main`, at
most `concurrency` at once, on whichever worker of the pool picks it up. It ends with the
artifact `sweep-results`: the trials sorted by a validation metric (never test), the best
named, a failed trial listed with its message.

A trial works in a fresh clone of the repository at the sweep's commit, in a temporary
folder, so trials never race on params.yaml or dvc.lock and the sweep's own checkout is
never touched. A clone, rather than a git worktree or `dvc exp run --temp`, because it
works on any machine that reaches the git remote, not only the one holding the
repository. The trial shares the DVC cache (the sweep's cache folder when the worker sees
it, else the DVC remote), so fetch, prepare and tokenize are cache hits; it runs the
`finetune` flow there as a subflow (so the deployment guard checks its overrides against
the clone) and pushes its DVC experiment back with `dvc exp push`.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, Failed, State
from ruamel.yaml import YAML

from flows.dvc_pipeline import dvc_output, repo_root, run_dvc
from flows.finetune import PARAMS_FILE, ParamsRejected, check_params, finetune
from flows.guard import check_deployment_run
from flows.overrides import apply_overrides

TRIAL_DEPLOYMENT = "sweep-trial/main"
ARTIFACT_KEY = "sweep-results"
METRICS = {"accuracy": True, "f1": True, "loss": False}  # validation figure: higher is better?
POLL_SECONDS = 2.0

log = logging.getLogger(__name__)


class SweepRejected(ValueError):
    """A sweep spec that no trial may start from."""


def expand(grid: dict[str, list] | None, trials: list[dict] | None) -> list[dict[str, Any]]:
    """The trials' overrides: every combination of `grid`, or the `trials` as given."""
    if (grid is None) == (trials is None):
        raise SweepRejected("give either grid (key: list of values) or trials (a list of "
                            "overrides), not both or neither")
    if grid is not None:
        empty = [key for key, values in grid.items() if not isinstance(values, list) or
                 not values]
        if not grid or empty:
            raise SweepRejected(f"grid needs at least one key, each with a non-empty list of "
                                f"values; got {grid!r}")
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    if not trials or not all(isinstance(t, dict) for t in trials):
        raise SweepRejected(f"trials must be a non-empty list of mappings; got {trials!r}")
    return [dict(t) for t in trials]


def check_trials(root: Path, rev: str, specs: list[dict[str, Any]]) -> None:
    """Every trial's params.yaml (commit `rev`'s, as the trial's clone will have it, with
    the trial's overrides), validated as the stages would, before any trial runs."""
    original = git(["show", f"{rev}:{PARAMS_FILE}"], root)
    for index, changes in enumerate(specs):
        scratch = root / f".sweep-check-{uuid.uuid4().hex[:8]}.yaml"  # its paths: the repo's
        try:
            scratch.write_text(original)
            apply_overrides(scratch, changes)  # ValueError: a key params.yaml lacks
            check_params(root, log, scratch.name)  # ParamsRejected: a value stages refuse
        except (ValueError, ParamsRejected) as err:
            message = str(err).removeprefix("error: ").replace(scratch.name, PARAMS_FILE)
            raise SweepRejected(f"trial {index} {changes}: {message}") from None
        finally:
            scratch.unlink(missing_ok=True)


def fan_out(parameters: list[dict[str, Any]], concurrency: int,
            logger: logging.LoggerAdapter) -> dict[str, State]:
    """Start the trials as deployment runs, at most `concurrency` at once; wait for all.
    Returns each trial's final state, by name."""
    pending, running, final = deque(parameters), {}, {}
    with get_client(sync_client=True) as client:
        while pending or running:
            while pending and len(running) < concurrency:
                trial = pending.popleft()
                run = run_deployment(TRIAL_DEPLOYMENT, parameters=trial, timeout=0,
                                     flow_run_name=trial["name"])
                logger.info("trial %s started (flow run %s): %s", trial["name"], run.id,
                            trial["overrides"])
                running[run.id] = trial["name"]
            time.sleep(POLL_SECONDS)
            for run_id, name in list(running.items()):
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    logger.info("trial %s: %s", name, state.name)
                    final[name] = state
                    del running[run_id]
    return final


def results_table(rows: list[dict[str, Any]], metric: str) -> str:
    """The artifact: trials by validation `metric`, best first, failures last."""
    done = sorted((r for r in rows if r["validation"]), reverse=METRICS[metric],
                  key=lambda r: r["validation"][metric])
    lines = [f"# Sweep: {len(done)} of {len(rows)} trials done, sorted by validation {metric}",
             "", "| trial | overrides | validation accuracy | validation f1 | "
             "validation loss | state |", "|---|---|---:|---:|---:|---|"]
    for row in done + [r for r in rows if not r["validation"]]:
        figures = [f"{row['validation'][k]:.4f}" if row["validation"] else "-"
                   for k in ("accuracy", "f1", "loss")]
        changes = ", ".join(f"`{k}={v}`" for k, v in row["overrides"].items())
        lines.append(f"| {row['name']} | {changes} | {' | '.join(figures)} | {row['state']} |")
    if done:
        lines += ["", f"Best by validation {metric}: **{done[0]['name']}**. Each trial is a "
                  "DVC experiment: `dvc exp show`, then `dvc exp apply <trial>`."]
    return "\n".join(lines) + "\n"


@flow(name="sweep", retries=0)
def sweep(grid: dict[str, list] | None = None, trials: list[dict] | None = None,
          concurrency: int = 2, metric: str = "accuracy", repo: str | None = None,
          source: str | None = None) -> State:
    """Run one finetune trial per combination of `grid` (or per entry of `trials`), at
    most `concurrency` at once; each is saved as a DVC experiment named `<sweep>-<n>`.

    Args:
        grid: dotted params.yaml keys, each with a list of values (`{"train.epochs": [1, 2]}`).
        trials: instead of a grid, a list of overrides, one mapping per trial.
        concurrency: trials running at once (the work pool spreads them over its workers).
        metric: the validation figure that ranks trials: accuracy, f1 or loss.
        repo: the DVC repository (any folder inside it); default: the working directory.
        source: the git URL trials clone from and push their experiments to; default: the
            repository's own folder (workers on this machine). Workers elsewhere need a
            URL they reach, and a DVC remote as the shared cache.
    """
    logger = get_run_logger()
    if metric not in METRICS or concurrency < 1:
        raise SweepRejected(f"metric must be one of {sorted(METRICS)} and concurrency >= 1; "
                            f"got {metric!r}, {concurrency!r}")
    root = repo_root(repo or os.getcwd())
    specs = expand(grid, trials)
    if deployment.id is not None:  # the deployment's guard covers every trial
        for changes in specs:
            check_deployment_run(root, repo_root(os.getcwd()), changes)
    rev = git(["rev-parse", "HEAD"], root).strip()  # trials start from the last commit
    check_trials(root, rev, specs)
    sweep_name = flow_run.get_name() or "sweep"
    cache = str(root / dvc_output(["cache", "dir"], root).strip())
    parameters = [{"source": source or str(root), "rev": rev, "name": f"{sweep_name}-{i}",
                   "overrides": changes, "cache": cache} for i, changes in enumerate(specs)]
    logger.info("sweep %s: %d trials of %s at %s, %d at once", sweep_name, len(specs), root,
                rev[:8], concurrency)
    states = fan_out(parameters, concurrency, logger)
    if source and source != str(root):  # the experiments went to the remote: fetch them
        for trial_run in (p for p in parameters if states[p["name"]].is_completed()):
            run_checked(["exp", "pull", source, trial_run["name"]], root, logger)
    rows = [trial_row(root, p, states[p["name"]]) for p in parameters]
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=results_table(rows, metric),
                             description=f"Trials of sweep {sweep_name}")
    failed = [r for r in rows if not r["validation"]]
    if len(failed) == len(rows):
        return Failed(message=f"every trial failed: {failed[0]['state']}")
    return Completed(message=f"{len(rows) - len(failed)} of {len(rows)} trials done")


def trial_row(root: Path, trial: dict[str, Any], state: State) -> dict[str, Any]:
    """One line of the results: the trial's validation figures, read from its experiment."""
    row = {"name": trial["name"], "overrides": trial["overrides"], "validation": None,
           "state": state.name}
    if not state.is_completed():
        row["state"] = f"{state.name}: {(state.message or '').splitlines()[0][:200]}"
        return row
    try:
        row["validation"] = experiment_metrics(root, trial["name"])["validation"]
    except (RuntimeError, subprocess.CalledProcessError, KeyError) as err:
        detail = err.stderr.strip() if isinstance(err, subprocess.CalledProcessError) else err
        row["state"] = f"{state.name}, but its metrics could not be read: {detail}"[:300]
    return row


def experiment_metrics(root: Path, name: str) -> dict[str, Any]:
    """The eval metrics (params' `paths.eval_metrics`) of DVC experiment `name`, read from
    its git ref (`refs/exps/<baseline>/<name>`)."""
    refs = git(["for-each-ref", "--format=%(refname)", "refs/exps"], root).splitlines()
    ref = next((r for r in refs if r.rsplit("/", 1)[-1] == name), None)
    if ref is None:
        raise RuntimeError(f"trial {name} completed but no experiment {name} came back")
    path = YAML(typ="safe").load(git(["show", f"{ref}:{PARAMS_FILE}"], root))["paths"]
    return json.loads(git(["show", f"{ref}:{path['eval_metrics']}"], root))


def git(args: list[str], cwd: Path) -> str:
    """Standard output of `git <args>`; CalledProcessError (with its stderr) if it fails."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


@flow(name="sweep-trial", retries=0)
def trial(source: str, rev: str, name: str, overrides: dict[str, Any],
          cache: str | None = None) -> None:
    """One trial of a sweep: clone `source` at `rev` into a temporary folder, run the
    finetune flow there with `overrides`, push the DVC experiment `name` back to `source`.

    Args:
        source: the repository's git URL or path, as this worker reaches it.
        rev: the commit every trial of the sweep starts from.
        name: the trial's name, also its flow run's and its DVC experiment's.
        overrides: dotted params.yaml keys and their values.
        cache: the sweep's DVC cache folder; used when this worker sees it, else the
            trial pulls from and pushes to the DVC remote.
    """
    logger = get_run_logger()
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=f"sweep-{name}-") as tmp:
        clone = Path(tmp) / "repo"
        git(["clone", "--quiet", source, str(clone)], Path(tmp))
        git(["checkout", "--quiet", "--detach", rev], clone)
        set_identity(clone, source)
        shared = bool(cache) and Path(cache).is_dir()
        if shared:  # the sweep's own cache: what it computed is here already
            run_checked(["cache", "dir", "--local", cache], clone, logger)
            run_checked(["checkout", "--allow-missing"], clone, logger)
        else:
            run_checked(["pull", "--allow-missing"], clone, logger)
        logger.info("trial %s in %s (DVC cache %s)", name, clone,
                    cache if shared else "pulled from the remote")
        os.chdir(clone)  # the finetune flow runs in, and its guard checks against, the clone
        try:
            finetune.with_options(flow_run_name=name)(overrides=overrides)
        finally:
            os.chdir(home)
        run_checked(["exp", "push", *(["--no-cache"] if shared else []), "origin", name],
                    clone, logger)


def set_identity(clone: Path, source: str) -> None:
    """An author for the experiment's commit: the worker's git identity, else the source
    repository's (a clone does not copy its local config), else the sweep's own."""
    for key, fallback in (("user.name", "finetune sweep"), ("user.email", "sweep@localhost")):
        found = subprocess.run(["git", "config", key], cwd=clone, capture_output=True,
                               text=True).stdout.strip()
        if not found and Path(source).is_dir():
            found = subprocess.run(["git", "config", key], cwd=source, capture_output=True,
                                   text=True).stdout.strip()
        git(["config", key, found or fallback], clone)


def run_checked(args: list[str], repo: Path, logger: logging.LoggerAdapter) -> None:
    """`dvc <args>` in `repo`, logged; raise with its output if it fails."""
    code, output = run_dvc(args, repo, logger)
    if code != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed (exit code {code}):\n{output}")
