"""End-to-end tests of the Prefect flow `finetune` through the real prefect and dvc CLIs.

The pipeline under test comes from the `pipeline_repo` fixture: today a toy DVC
project of three `python -c` stages; it can be switched to a copy of the real
repository with a tiny config without touching the tests, as long as it
returns a `Pipeline`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.prefect_helpers import (
    VENV_BIN,
    PrefectServer,
    group_alive,
    kill_marked,
    marked_pids,
    prefect_env,
    prefect_server,
    serving,
    worker,
)

from flows.finetune import apply_overrides

REPO_ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Pipeline:
    """A DVC project to run the flow on, and what a test may expect of it."""

    path: Path
    stages: list[str]  # dvc.yaml stages in dependency order
    params: dict[str, Any]  # flow parameters of a valid run
    expected_params: dict[str, Any]  # dotted params.yaml keys those parameters set
    check_metrics: Callable[[dict[str, Any]], None]  # metrics/eval.json after that run
    bad_params: dict[str, Any]  # flow parameters a stage rejects...
    bad_message: str  # ...with this message


# The stages are listed against their dependency order on purpose: the flow
# must take the order from the DAG, not from the file.
TOY_DVC_YAML = """\
stages:
  evaluate:
    cmd: >-
      python -c "import json, pathlib;
      p = json.load(open('model.json'));
      m = dict(accuracy=0.9, precision=0.8, recall=0.7, f1=0.75,
      loss=p['learning_rate'] * p['epochs']);
      pathlib.Path('metrics').mkdir(exist_ok=True);
      json.dump(dict(test=m, validation=m, ood=dict(tweets=m)),
      open('metrics/eval.json', 'w'))"
    deps: [model.json]
    metrics:
      - metrics/eval.json:
          cache: false  # in git, like the real pipeline's metrics
  train:
    cmd: >-
      python -c "import json, sys, yaml;
      p = yaml.safe_load(open('params.yaml'))['train'];
      lr = p['learning_rate'];
      isinstance(lr, float) and lr > 0
      or sys.exit(f'train.learning_rate must be a float > 0, got {lr!r}');
      json.dump(p, open('model.json', 'w'))"
    deps: [data.json]
    params: [train]
    outs: [model.json]
  fetch:
    cmd: >-
      python -c "import json, yaml;
      json.dump(yaml.safe_load(open('params.yaml'))['fetch'], open('data.json', 'w'))"
    params: [fetch]
    outs: [data.json]
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


def make_toy_repo(path: Path) -> Path:
    """A git + DVC project with the toy pipeline and a copy of flows/, committed."""
    path.mkdir()
    shutil.copytree(
        REPO_ROOT / "flows", path / "flows", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO_ROOT / "prefect.yaml", path)
    (path / "dvc.yaml").write_text(TOY_DVC_YAML)
    (path / "params.yaml").write_text(TOY_PARAMS)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run(["git", "init", "-q"], cwd=path)
    dvc("init", "-q", cwd=path)
    dvc("config", "core.analytics", "false", cwd=path)
    run(["git", "add", "-A"], cwd=path)
    run([*git, "commit", "-qm", "toy pipeline"], cwd=path)
    return path


def check_toy_metrics(metrics: dict[str, Any]) -> None:
    """The toy evaluate stage reports loss = learning_rate * epochs."""
    assert metrics["test"]["loss"] == pytest.approx(3e-5 * 3)
    assert set(metrics) == {"test", "validation", "ood"}


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> Pipeline:
    """The DVC project the flow runs on (module-wide: runs build on each other's cache)."""
    path = make_toy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    return Pipeline(
        path=path,
        stages=["fetch", "train", "evaluate"],
        # 3e-5 also proves the YAML 1.1 float pitfall is handled: written as
        # `3e-05`, the stage's PyYAML would read a string and reject it.
        params={"learning_rate": 3e-5, "overrides": {"train.epochs": 3}},
        expected_params={"train.learning_rate": 3e-5, "train.epochs": 3},
        check_metrics=check_toy_metrics,
        bad_params={"learning_rate": -1},
        bad_message="train.learning_rate must be a float > 0, got -1.0",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> PrefectServer:
    """A real Prefect server for this module; nothing of it survives teardown."""
    with prefect_server(tmp_path_factory.mktemp("server")) as srv:
        yield srv
    assert not marked_pids(srv.marker)


@pytest.fixture(scope="module")
def served(server, pipeline_repo, tmp_path_factory):
    """`python -m flows.finetune serve` running in the pipeline repository."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(server, pipeline_repo.path, log) as handle:
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


def task_runs(server: PrefectServer, name: str) -> list[dict[str, Any]]:
    """Task runs of the flow run `name`, in the order they started."""
    query = {"flow_runs": {"name": {"any_": [name]}}}
    records = server.api("POST", "/task_runs/filter", json=query).json()
    return sorted(records, key=lambda record: record["start_time"] or "")


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


def dotted(params: dict[str, Any], key: str) -> Any:
    """params["a"]["b"] for key "a.b"."""
    for part in key.split("."):
        params = params[part]
    return params


def unique(prefix: str) -> str:
    """A flow run (and DVC experiment) name not used before."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_apply_overrides_keeps_comments_and_writes_yaml11_floats(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(TOY_PARAMS)
    apply_overrides(params, {"train.learning_rate": 3e-5, "fetch.model": "bert-base-uncased"})
    text = params.read_text()
    assert "# Toy pipeline parameters" in text and "# model source" in text
    # PyYAML (YAML 1.1) is what the stages read params with.
    assert yaml.safe_load(text)["train"]["learning_rate"] == 3e-5
    assert yaml.safe_load(text)["fetch"]["model"] == "bert-base-uncased"
    with pytest.raises(ValueError, match="unknown params key 'train.lr'.*learning_rate"):
        apply_overrides(params, {"train.lr": 1})


def test_served_run_overrides_params_and_rerun_is_cached(server, served, pipeline_repo):
    repo = pipeline_repo.path
    name = unique("override")
    code, output, _ = deployment_run(server, pipeline_repo.params, name)
    assert code == 0, output

    assert [record["name"] for record in task_runs(server, name)] == pipeline_repo.stages
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in pipeline_repo.expected_params.items():
        assert dotted(params, key) == value
    pipeline_repo.check_metrics(json.loads((repo / "metrics/eval.json").read_text()))
    assert json.loads(dvc("status", "--json", cwd=repo)) == {}
    assert name in dvc("exp", "list", "--name-only", cwd=repo).split()
    # The experiment holds the metrics (a cache: false output), so runs compare.
    diff = json.loads(dvc("metrics", "diff", "HEAD", name, "--json", cwd=repo))
    assert diff["metrics/eval.json"]["test.loss"]["new"] == pytest.approx(
        json.loads((repo / "metrics/eval.json").read_text())["test"]["loss"]
    )
    query = {
        "artifacts": {"key": {"any_": ["finetune-metrics"]}},
        "flow_runs": {"name": {"any_": [name]}},
    }
    artifacts = server.api("POST", "/artifacts/filter", json=query).json()
    assert len(artifacts) == 1 and "| finetuned | test |" in artifacts[0]["data"]

    again = unique("again")
    code, output, seconds = deployment_run(server, pipeline_repo.params, again)
    assert code == 0, output
    assert seconds < 30
    states = {record["name"]: record["state"]["name"] for record in task_runs(server, again)}
    assert states == dict.fromkeys(pipeline_repo.stages, "Cached")
    assert json.loads(dvc("status", "--json", cwd=repo)) == {}


@pytest.mark.parametrize("case", ["stage rejects value", "unknown key"])
def test_failed_run_fails_flow_with_the_error_in_its_logs(server, served, pipeline_repo, case):
    if case == "unknown key":
        params = {"overrides": {"train.no_such_key": 1}}
        message = "unknown params key 'train.no_such_key'"
    else:
        params, message = pipeline_repo.bad_params, pipeline_repo.bad_message
    before = (pipeline_repo.path / "params.yaml").read_text()
    name = unique("bad")
    code, output, _ = deployment_run(server, params, name)
    assert code != 0, output
    record = flow_run(server, name)
    assert record["state"]["type"] == "FAILED"
    assert message in flow_run_logs(server, record["id"], message)
    # A rejected value is not left behind to poison the next run.
    assert (pipeline_repo.path / "params.yaml").read_text() == before


def test_local_run_needs_no_server(pipeline_repo, tmp_path):
    repo = pipeline_repo.path
    marker = uuid.uuid4().hex
    env = prefect_env(tmp_path / "home", marker)  # no PREFECT_API_URL: ephemeral mode
    command = [sys.executable, "-m", "flows.finetune", "--epochs", "1", "--set", "fetch.data=x"]
    process = subprocess.Popen(
        command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=180)
    finally:
        kill_marked(marker)  # only does something if the run hung
    assert process.returncode == 0, output
    assert "Finished in state Completed()" in output
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["epochs"] == 1 and params["fetch"]["data"] == "x"
    assert json.loads(dvc("status", "--json", cwd=repo)) == {}
    # The temporary server Prefect started is gone with the run.
    assert not group_alive(process.pid)
    assert not marked_pids(marker)


def test_served_deployment_runs_one_at_a_time(server, served, pipeline_repo):
    deployment = server.api("GET", "/deployments/name/finetune/main").json()
    assert deployment["global_concurrency_limit"]["limit"] == 1
    ids = [
        server.api(
            "POST", f"/deployments/{deployment['id']}/create_flow_run",
            json={"name": unique("overlap"), "parameters": pipeline_repo.params},
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
    assert states == ["COMPLETED", "COMPLETED"]
    first, second = sorted(records, key=lambda record: record["start_time"])
    assert second["start_time"] >= first["end_time"]


def test_prefect_yaml_deploys_to_a_process_pool_and_nothing_outlives_a_failing_test(
    pipeline_repo, tmp_path
):
    repo = pipeline_repo.path
    prefect = str(VENV_BIN / "prefect")
    with pytest.raises(RuntimeError, match="test body failed"):
        with prefect_server(tmp_path) as srv:
            groups, markers = [srv.process.pid], [srv.marker]
            run([prefect, "work-pool", "create", "finetune", "--type", "process"], repo, srv.env)
            run([prefect, "deploy", "--all", "--no-prompt"], repo, srv.env)
            deployment = srv.api("GET", "/deployments/name/finetune/main").json()
            assert deployment["global_concurrency_limit"]["limit"] == 1
            (step,) = deployment["pull_steps"]
            pull_dir = step["prefect.deployments.steps.set_working_directory"]["directory"]
            assert pull_dir == str(repo)

            with worker(srv, "finetune", tmp_path, tmp_path / "worker.log") as handle:
                groups.append(handle.process.pid)
                markers.append(handle.marker)
                name = unique("pool")
                code, output, _ = deployment_run(srv, pipeline_repo.params, name)
                assert code == 0, output + (tmp_path / "worker.log").read_text()
                stages = [record["name"] for record in task_runs(srv, name)]
                assert stages == pipeline_repo.stages
                raise RuntimeError("test body failed")
    assert not any(group_alive(pgid) for pgid in groups)
    assert not any(marked_pids(marker) for marker in markers)
