"""End-to-end tests of the Prefect flow `finetune` through the real prefect and dvc CLIs.

The flow runs on a temporary git + DVC copy of this repository configured for a
tiny BERT and ~60 rows (conftest's `make_repo_copy`), so every stage of dvc.yaml
really runs. One Prefect server and one `serve` process are shared by the
module, and its tests build on each other's DVC cache: the first served run
trains, everything after it is mostly cached and quick.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from finetuning.config import read_params as read_params_file
from flows.dvc_pipeline import git_files, read_pipeline, stale_stages
from flows.overrides import apply_overrides
from tests.prefect_helpers import (VENV_BIN, PrefectServer, fresh_home, group_alive, kill_marked,
                                   marked_pids, migrated_database, prefect_env, prefect_server,
                                   serving, worker)

REPO_ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
BAD_LEARNING_RATE = -1
BAD_MESSAGE = "train.learning_rate must be a float in [0, 1)"

# A toy pipeline for the cheap unit tests. Its stages are listed against their
# dependency order on purpose: the flow must take the order from the DAG.
TOY_DVC_YAML = """\
stages:
  evaluate:
    cmd: python -c "open('metrics.json', 'w').write(open('model.txt').read())"
    deps: [model.txt]
    metrics:
      - metrics.json:
          cache: false  # in git: `dvc exp save` must be told to take it
  train:
    cmd: python -c "open('model.txt', 'w').write(open('data.txt').read())"
    deps: [data.txt]
    params: [train]
    outs: [model.txt]
  fetch:
    cmd: python -c "open('data.txt', 'w').write('rows')"
    params: [fetch]
    outs: [data.txt]
"""

TOY_PARAMS = """\
# Toy pipeline parameters; the flow's overrides must keep this comment.
fetch:
  model: tiny-bert  # model source
  data: toy-reviews
train:
  learning_rate: 0.0001
  epochs: 2
"""


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, **kwargs):
    """Run a command, failing the test with its output if it fails."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result


def dvc(*args: str, cwd: Path) -> str:
    """Output of `dvc <args>` from the venv."""
    return run([str(VENV_BIN / "dvc"), *args], cwd=cwd).stdout


def dvc_status_clean(repo: Path) -> bool:
    """Whether `dvc status` says every stage and output is up to date."""
    return json.loads(dvc("status", "--json", cwd=repo)) == {}


def read_params(repo: Path, rev: str | None = None) -> dict[str, Any]:
    """params.yaml of the workspace, or of git revision `rev`."""
    if rev is None:
        return yaml.safe_load((repo / "params.yaml").read_text())
    return yaml.safe_load(run(["git", "show", f"{rev}:params.yaml"], cwd=repo).stdout)


def unique(prefix: str) -> str:
    """A flow run (and DVC experiment) name not used before."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def pipeline_repo(reproduced, tmp_path_factory) -> Path:
    """A copy of the reproduced tiny repository (every stage run once), with prefect.yaml
    committed."""
    repo = Path(shutil.copytree(reproduced[0], tmp_path_factory.mktemp("pipeline") / "repo",
                                symlinks=True))
    shutil.copy(REPO_ROOT / "prefect.yaml", repo)
    run(["git", "add", "prefect.yaml"], cwd=repo)
    run(["git", "commit", "-qm", "prefect.yaml"], cwd=repo)
    return repo


@pytest.fixture(scope="module")
def stages(pipeline_repo) -> list[str]:
    """dvc.yaml's stages, in the file's order (which is their dependency order)."""
    return list(yaml.safe_load((pipeline_repo / "dvc.yaml").read_text())["stages"])


@pytest.fixture(scope="module")
def prefect_database(tmp_path_factory) -> Path:
    """An empty, migrated Prefect database: each fresh PREFECT_HOME starts from a copy."""
    return migrated_database(tmp_path_factory.mktemp("prefect-database"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, prefect_database) -> PrefectServer:
    """A real Prefect server for this module; nothing of it survives teardown."""
    with prefect_server(tmp_path_factory.mktemp("server"), prefect_database) as srv:
        yield srv
    assert not marked_pids(srv.marker)


@pytest.fixture(scope="module")
def served(server, pipeline_repo, tmp_path_factory):
    """`python -m flows.finetune serve` running in the pipeline repository."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(server, pipeline_repo, log) as handle:
        yield handle
    assert not marked_pids(handle.marker)


def deployment_run(
    server: PrefectServer, params: dict[str, Any], name: str
) -> tuple[int, str, float]:
    """`prefect deployment run finetune/main --watch`; exit code, output, seconds."""
    command = [
        str(VENV_BIN / "prefect"), "deployment", "run", "finetune/main",
        "--watch", "--watch-interval", "1", "--flow-run-name", name,
    ]
    for key, value in params.items():
        command += ["-p", f"{key}={json.dumps(value)}"]
    start = time.monotonic()
    result = subprocess.run(command, env=server.env, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr, time.monotonic() - start


def flow_run(server: PrefectServer, name: str) -> dict[str, Any]:
    """The flow run called `name`."""
    query = {"flow_runs": {"name": {"any_": [name]}}}
    (found,) = server.api("POST", "/flow_runs/filter", json=query).json()
    return found


def task_states(server: PrefectServer, name: str) -> dict[str, str]:
    """{task run name: state name} of the flow run `name`, in the order they started."""
    query = {"flow_runs": {"name": {"any_": [name]}}}
    records = server.api("POST", "/task_runs/filter", json=query).json()
    records.sort(key=lambda record: record["start_time"] or "")
    states = {record["name"]: record["state"]["name"] for record in records}
    assert len(states) == len(records), f"a stage ran twice: {records}"
    return states


def flow_run_logs(server: PrefectServer, flow_run_id: str, expect: str) -> str:
    """The run's log messages, waiting a little for `expect` (logs ship in batches)."""
    query = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}}
    deadline = time.monotonic() + 15
    while True:
        logs = server.api("POST", "/logs/filter", json=query).json()
        text = "\n".join(log["message"] for log in logs)
        if expect in text or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def max_logged_learning_rate(repo: Path) -> float:
    """Peak of the learning-rate curve train logged to TensorBoard (exported by report)."""
    plots = repo / read_params(repo)["paths"]["plots"]
    with (plots / "train_learning_rate.tsv").open() as rows:
        return max(float(row["value"]) for row in csv.DictReader(rows, delimiter="\t"))


def test_apply_overrides_keeps_comments_and_writes_numbers(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(TOY_PARAMS)
    apply_overrides(params, {"train.learning_rate": 3e-5, "fetch.model": "bert-base-uncased"})
    text = params.read_text()
    assert "# Toy pipeline parameters" in text and "# model source" in text
    # The stages read params.yaml as YAML 1.2, as DVC does: `3e-05` is a number.
    assert read_params_file(params)["train"]["learning_rate"] == 3e-5
    assert read_params_file(params)["fetch"]["model"] == "bert-base-uncased"
    with pytest.raises(ValueError, match="unknown params key 'train.lr'.*learning_rate"):
        apply_overrides(params, {"train.lr": 1})


def test_stages_in_dependency_order_and_the_files_git_keeps(tmp_path):
    (tmp_path / "dvc.yaml").write_text(TOY_DVC_YAML)
    (tmp_path / "params.yaml").write_text(TOY_PARAMS)
    dvc("init", "--no-scm", "-q", cwd=tmp_path)
    pipeline = read_pipeline(tmp_path)
    assert pipeline.order == ["fetch", "train", "evaluate"]
    assert pipeline.upstream == {"fetch": set(), "train": {"fetch"}, "evaluate": {"train"}}
    assert stale_stages(tmp_path) == {"fetch", "train", "evaluate"}  # never run
    # What `dvc exp save` must take along: git-tracked deps and outputs, once they exist.
    assert git_files(tmp_path) == ["dvc.yaml", "params.yaml"]
    for name in ("dvc.lock", "metrics.json", "model.txt"):
        (tmp_path / name).write_text("x")
    assert git_files(tmp_path) == ["dvc.lock", "dvc.yaml", "metrics.json", "params.yaml"]


def test_the_real_pipeline_keeps_metrics_and_plots_in_git(pipeline_repo):
    files = git_files(pipeline_repo)
    assert "dvc.yaml" in files and "params.yaml" in files and "finetuning/cli.py" not in files
    assert "stages/train.py" in files and "finetuning/training/loop.py" in files  # code deps
    assert not any(f.startswith(("data/", "models/", "logs/")) for f in files)


def test_served_run_applies_the_override_and_a_rerun_is_cached(
    server, served, pipeline_repo, stages
):
    repo = pipeline_repo
    committed = read_params(repo, "HEAD")["train"]["learning_rate"]
    learning_rate = 2 * committed
    name = unique("override")
    code, output, _ = deployment_run(server, {"learning_rate": learning_rate}, name)
    assert code == 0, output
    # One task run per stage: what the learning rate feeds ran, the rest was up to date.
    affected = {"train", "evaluate", "export", "report", "card"}
    assert task_states(server, name) == {
        stage: "Completed" if stage in affected else "Cached" for stage in stages}

    assert read_params(repo)["train"]["learning_rate"] == learning_rate
    params_diff = json.loads(dvc("params", "diff", "HEAD", name, "--json", cwd=repo))
    change = params_diff["params.yaml"]["train.learning_rate"]
    assert (change["old"], change["new"]) == (committed, learning_rate)
    # Training used it: the schedule it logged peaks at it (float32 in the event files).
    assert max_logged_learning_rate(repo) == pytest.approx(learning_rate, rel=1e-6)
    # The experiment holds the metrics (git-tracked outputs), so runs compare.
    eval_metrics = json.loads((repo / "metrics/eval.json").read_text())
    metrics_diff = json.loads(dvc("metrics", "diff", "HEAD", name, "--json", cwd=repo))
    assert metrics_diff["metrics/eval.json"]["test.loss"]["new"] == pytest.approx(
        eval_metrics["test"]["loss"]
    )
    assert dvc_status_clean(repo)
    query = {
        "artifacts": {"key": {"any_": ["finetune-metrics"]}},
        "flow_runs": {"name": {"any_": [name]}},
    }
    (artifact,) = server.api("POST", "/artifacts/filter", json=query).json()
    assert "| test | fine-tuned |" in artifact["data"]
    assert "| test | baseline |" in artifact["data"]
    assert "## Summary" in artifact["data"] and "Stages: fetch (cached)" in artifact["data"]
    assert "train (ran)" in artifact["data"]

    again = unique("again")
    code, output, _ = deployment_run(server, {"learning_rate": learning_rate}, again)
    assert code == 0, output
    assert task_states(server, again) == dict.fromkeys(stages, "Cached")  # (in ~15 s here)
    assert dvc_status_clean(repo)


def test_local_run_needs_no_server(pipeline_repo, stages, prefect_database, tmp_path):
    repo = pipeline_repo
    marker = uuid.uuid4().hex
    home = fresh_home(tmp_path / "home", prefect_database)
    env = prefect_env(home, marker)  # no PREFECT_API_URL: ephemeral mode
    # The value already in params.yaml: every stage is up to date.
    learning_rate = read_params(repo)["train"]["learning_rate"]
    command = [sys.executable, "-m", "flows.finetune", "--learning-rate", str(learning_rate)]
    process = subprocess.Popen(
        command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=180)
    finally:
        kill_marked(marker)  # only does something if the run hung
    assert process.returncode == 0, output
    assert "Starting temporary server" in output
    for stage in stages:
        assert f"Task run '{stage}' - Finished in state Cached(" in output, output
    assert "Flow run" in output and "Finished in state Completed()" in output
    assert dvc_status_clean(repo)
    # The temporary server Prefect started is gone with the run.
    assert not group_alive(process.pid)
    assert not marked_pids(marker)


def test_runs_of_the_deployment_never_overlap(server, served):
    deployment = server.api("GET", "/deployments/name/finetune/main").json()
    assert deployment["global_concurrency_limit"]["limit"] == 1
    # Runs that fail fast (on a params key that does not exist, before any
    # stage) keep this cheap; the slot is held just the same.
    message = "unknown params key 'train.no_such_key'"
    ids = [
        server.api(
            "POST", f"/deployments/{deployment['id']}/create_flow_run",
            json={"name": unique("overlap"), "parameters": {"overrides": {"train.no_such_key": 1}}},
        ).json()["id"]
        for _ in range(2)
    ]
    deadline = time.monotonic() + 120
    while True:
        records = [server.api("GET", f"/flow_runs/{id_}").json() for id_ in ids]
        states = [record["state"]["type"] for record in records]
        if TERMINAL.issuperset(states) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert states == ["FAILED", "FAILED"]
    for record in records:
        assert message in flow_run_logs(server, record["id"], message)
    first, second = sorted(records, key=lambda record: record["start_time"])
    assert second["start_time"] >= first["end_time"]


def test_bad_override_fails_the_flow_run_with_the_validation_message(
    server, served, pipeline_repo
):
    before = (pipeline_repo / "params.yaml").read_text()
    name = unique("bad")
    code, output, _ = deployment_run(server, {"learning_rate": BAD_LEARNING_RATE}, name)
    assert code != 0, output
    record = flow_run(server, name)
    assert record["state"]["type"] == "FAILED"
    assert BAD_MESSAGE in flow_run_logs(server, record["id"], BAD_MESSAGE)
    # Checked before any stage runs: DVC never got to delete the good outputs.
    assert task_states(server, name) == {}
    assert (pipeline_repo / "models" / "finetuned" / "model.safetensors").is_file()
    # A rejected value is not left behind to poison the next run.
    assert (pipeline_repo / "params.yaml").read_text() == before
    assert dvc_status_clean(pipeline_repo)


def test_a_deployment_run_may_not_move_outputs_and_changes_nothing(server, served,
                                                                   pipeline_repo):
    """Anyone who reaches the API can start runs: `paths.tensorboard: flows` would make the
    train stage delete the flow's source. Refused before anything runs."""
    before = (pipeline_repo / "params.yaml").read_text()
    name = unique("moved")
    code, output, _ = deployment_run(server, {"overrides": {"paths.tensorboard": "flows"}},
                                     name)
    assert code != 0, output
    record = flow_run(server, name)
    assert record["state"]["type"] == "FAILED"
    message = "refused override paths.tensorboard: a deployment run may not move"
    assert message in flow_run_logs(server, record["id"], message)
    assert task_states(server, name) == {}
    assert (pipeline_repo / "flows" / "finetune.py").is_file()
    assert (pipeline_repo / "params.yaml").read_text() == before
    assert dvc_status_clean(pipeline_repo)


def test_the_guard_refuses_other_repos_and_outside_sources_unless_allowed(
        tmp_path, monkeypatch):
    from flows.guard import ALLOW_ENV, RefusedOverride, check_deployment_run

    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (tmp_path / "elsewhere.csv").write_text("text,label\n")
    allowed = {"train.learning_rate": 3e-5, "fetch.data": "data",
               "fetch.model": "bert-base-uncased", "fetch.ood": {"x": "registry:vader/tweets"}}
    check_deployment_run(root, root, allowed)  # inside the checkout, Hub ids, registry
    refused = [({"paths.plots": "plots2"}, "paths.plots"),
               ({"paths": {"plots": "src"}}, "paths.plots"),
               ({"fetch.data": "/"}, "fetch.data='/'"),
               ({"fetch.model": str(tmp_path / "elsewhere.csv")}, "fetch.model="),
               ({"fetch.ood": {"y": "../elsewhere.csv"}}, "fetch.ood.y="),
               ({"fetch.data": "~"}, "fetch.data='~'")]
    for changes, named in refused:
        with pytest.raises(RefusedOverride, match=re.escape(named)):
            check_deployment_run(root, root, changes)
    with pytest.raises(RefusedOverride, match="works in the checkout it is served from"):
        check_deployment_run(tmp_path, root, {})
    monkeypatch.setenv(ALLOW_ENV, "1")
    for changes, _ in refused:
        check_deployment_run(root, root, changes)
    check_deployment_run(tmp_path, root, {})


def test_a_sweep_fans_out_over_a_work_pool_and_leaves_the_workspace_alone(
    pipeline_repo, prefect_database, tmp_path
):
    """prefect.yaml's deployments on a process pool, one worker: a 2-trial sweep runs both
    trials at once, each in its own clone, saved as DVC experiments of the repository,
    ranked in the sweep's artifact by validation accuracy; params.yaml and dvc.lock of
    the checkout stay as they were; nothing outlives the test."""
    repo, prefect = pipeline_repo, str(VENV_BIN / "prefect")
    before = {name: (repo / name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    name = unique("sweep")
    with prefect_server(tmp_path, prefect_database) as srv:
        groups, markers = [srv.process.pid], [srv.marker]
        run([prefect, "work-pool", "create", "finetune", "--type", "process"], repo, srv.env)
        run([prefect, "deploy", "--all", "--no-prompt"], repo, srv.env)
        deployment = srv.api("GET", "/deployments/name/finetune/main").json()
        assert deployment["work_pool_name"] == "finetune"
        assert deployment["entrypoint"] == "flows/finetune.py:finetune"
        assert deployment["global_concurrency_limit"]["limit"] == 1
        # A worker's flow runs execute in this checkout (its DVC cache and params).
        (step,) = deployment["pull_steps"]
        assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(repo)
        with worker(srv, "finetune", tmp_path, tmp_path / "worker.log") as handle:
            groups.append(handle.process.pid)
            markers.append(handle.marker)
            swept = subprocess.run(
                [prefect, "deployment", "run", "sweep/main", "--watch", "--watch-interval", "1",
                 "--flow-run-name", name, "-p", "concurrency=2",
                 "-p", 'grid={"train.learning_rate": [0.001, 0.003]}'],
                cwd=repo, env=srv.env, capture_output=True, text=True, timeout=600)
            assert swept.returncode == 0, swept.stdout + swept.stderr + \
                (tmp_path / "worker.log").read_text()[-6000:]
            trials = srv.api("POST", "/flow_runs/filter", json={"flow_runs": {"name": {
                "any_": [f"{name}-0", f"{name}-1"]}}, "deployments": {"name": {
                    "any_": ["main"]}}}).json()
        artifact = srv.api("POST", "/artifacts/filter", json={"artifacts": {"key": {
            "any_": ["sweep-results"]}}}).json()[0]["data"]
    assert not any(group_alive(pgid) for pgid in groups)
    assert not any(marked_pids(marker) for marker in markers)

    assert len(trials) == 2 and {t["state_type"] for t in trials} == {"COMPLETED"}
    first, second = sorted(trials, key=lambda t: t["start_time"])
    assert second["start_time"] < first["end_time"]  # both at once
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo))
    experiments = {exp["name"]: exp for rev in shown for exp in rev.get("experiments") or []}
    accuracy = {}
    for index, rate in enumerate((0.001, 0.003)):
        (run_,) = experiments[f"{name}-{index}"]["revs"]
        assert run_["data"]["params"]["params.yaml"]["data"]["train"]["learning_rate"] == rate
        eval_ = run_["data"]["metrics"]["metrics/eval.json"]["data"]
        accuracy[f"{name}-{index}"] = eval_["validation"]["accuracy"]
    ranked = sorted(accuracy, key=lambda trial: -accuracy[trial])
    rows = [line for line in artifact.splitlines() if line.startswith(f"| {name}-")]
    assert [row.split(" | ")[0][2:] for row in rows] == ranked
    assert f"Best by validation accuracy: **{ranked[0]}**" in artifact
    assert {name: (repo / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("grid, trials, message", [
    ({}, None, "grid needs at least one key"),
    ({"train.epochs": []}, None, "grid needs at least one key, each with a non-empty list"),
    (None, [], "trials must be a non-empty list"),
    ({"train.epochs": [1]}, [{"train.epochs": 1}], "either grid"),
    ({"train.epochz": [1, 2]}, None, "trial 0 {'train.epochz': 1}: unknown params key "
     "'train.epochz': params.yaml has no 'epochz' under train"),
    ({"train.learning_rate": [1e-3, -1]}, None, "trial 1 {'train.learning_rate': -1}: "
     "params.yaml: params: train.learning_rate must be a float in [0, 1)"),
])
def test_a_bad_sweep_is_refused_before_any_trial(pipeline_repo, grid, trials, message):
    from flows.sweep import SweepRejected, check_trials, expand, git

    rev = git(["rev-parse", "HEAD"], pipeline_repo).strip()
    with pytest.raises(SweepRejected) as err:
        check_trials(pipeline_repo, rev, expand(grid, trials))
    assert message in str(err.value)
    assert not list(pipeline_repo.glob(".sweep-check-*"))


def test_a_grid_is_every_combination():
    from flows.sweep import expand

    assert expand({"a": [1, 2], "b": ["x", "y"]}, None) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert expand(None, [{"a": 1}, {"b": 2}]) == [{"a": 1}, {"b": 2}]


def test_results_rank_trials_by_validation_and_list_a_failed_trial_last(tmp_path):
    from prefect.states import Completed, Failed

    from flows.sweep import results_table, trial_row

    failed = trial_row(tmp_path, {"name": "s-1", "overrides": {"train.epochs": 9}},
                       Failed(message="stage 'train' failed (dvc exit code 1):\nmore lines"))
    assert failed == {"name": "s-1", "overrides": {"train.epochs": 9}, "validation": None,
                      "state": "Failed: stage 'train' failed (dvc exit code 1):"}
    rows = [{"name": "s-0", "overrides": {"train.epochs": 1}, "state": "Completed",
             "validation": {"accuracy": 0.6, "f1": 0.5, "loss": 0.5}}, failed,
            {"name": "s-2", "overrides": {"train.epochs": 3}, "state": "Completed",
             "validation": {"accuracy": 0.8, "f1": 0.7, "loss": 0.6}}]
    for metric, order in (("accuracy", ["s-2", "s-0", "s-1"]), ("loss", ["s-0", "s-2", "s-1"])):
        table = results_table(rows, metric)
        assert [line.split(" | ")[0][2:] for line in table.splitlines()
                if line.startswith("| s-")] == order
        assert f"Best by validation {metric}: **{order[0]}**" in table
    assert "2 of 3 trials done" in table and "| Failed: stage 'train' failed" in table
    lost = trial_row(tmp_path, {"name": "s-3", "overrides": {}}, Completed())  # no git here
    assert lost["validation"] is None
    assert lost["state"].startswith("Completed, but its metrics could not be read: fatal:")
