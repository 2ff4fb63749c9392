"""DDP through torchrun on CPU (gloo, 2 processes): one model and one log, an exact
resume after a kill, a failing rank that stops the run, and 2 "nodes" on 127.0.0.1 (the
second joined with `finetune join`) that train the same model as 1 node of 2 processes,
or refuse to when their data differ; LoRA adapters under DDP."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from finetuning.config import config_from_dict
from finetuning.monitoring.events import load_events
from finetuning.training.checkpoint import CHECKPOINT
from finetuning.training.launch import Topology, torchrun_command
from tests.conftest import (BIN, ROOT, kill_after_checkpoint, paths_under, run_bounded,
                            run_stage_main, tiny_params, write_params)
from tests.prefect_helpers import MARKER_VAR, marked_pids

# A collective stuck for a minute fails the run with torch's message instead of hanging.
DIST_ENV = {**os.environ, "FINETUNE_DIST_TIMEOUT": "60"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model, tiny_data):
    """Tokenized tiny data in a folder, and a params file for 2-process training."""
    root = tmp_path_factory.mktemp("ddp")
    params = {**tiny_params(tiny_model, tiny_data), "paths": paths_under(root)}
    # effective batch 8, as single; the last step kept, so the final weights depend on
    # every step after a resume (the best one could be from before it)
    params["train"].update(batch_size=4, select="last")
    params_file = write_params(params, root / "params.yaml")
    for stage in ("fetch", "prepare", "tokenize"):
        run_stage_main(stage, params_file)
    return root, config_from_dict(params)


def train_command(root: Path, *topology: str) -> list[str]:
    """The train stage on `root`'s params, as dvc.yaml runs it (2 processes unless
    `topology` says otherwise)."""
    return [sys.executable, "-m", "stages.train", "--params", str(root / "params.yaml"),
            *(topology or ["--nproc-per-node", "2"])]


def copy_inputs(prepared, dest: Path) -> dict:
    """A folder with a copy of the prepared run's inputs and its params; the params."""
    root, cfg = prepared
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["paths"] = paths_under(dest)
    for key in ("base_model", "tokenized", "prepared"):
        shutil.copytree(getattr(cfg.paths, key), params["paths"][key])
    write_params(params, dest / "params.yaml")
    return params


def free_port() -> int:
    """A port nothing listens on now (node 0's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_nodes(node0: Path, node1: Path) -> tuple:
    """Node 0's train stage and node 1's `finetune join`, 1 process each, meeting on
    127.0.0.1; (node 0's result, node 1's exit status and standard error)."""
    port = str(free_port())
    common = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port]
    log = node1 / "join.log"  # a file, not a pipe nobody reads while node 0 runs
    with log.open("w") as err:
        joined = subprocess.Popen([str(BIN / "finetune"), "join", "--params",
                                   str(node1 / "params.yaml"), "--node-rank", "1", *common],
                                  cwd=ROOT, env=DIST_ENV, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        first = run_bounded(train_command(node0, "--node-rank", "0", *common), ROOT,
                            timeout=300, env=DIST_ENV)
        joined.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(joined.pid, signal.SIGKILL)
    return first, joined.returncode, log.read_text()


@pytest.fixture(scope="module")
def uninterrupted(prepared):
    """One uninterrupted 2-process run (what the tests below compare against)."""
    root, cfg = prepared
    result = run_bounded(train_command(root), ROOT, timeout=300, env=DIST_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, load_file(Path(cfg.paths.trained) / "model.safetensors")


def test_two_gloo_processes_train_one_model_and_one_log(prepared, uninterrupted):
    root, cfg = prepared
    result = uninterrupted[0]
    figures = json.loads(Path(cfg.paths.train_metrics).read_text())
    assert json.loads(Path(cfg.paths.train_run).read_text())["world_size"] == 2
    assert figures["steps"] == 12  # 48 rows / (4 per rank x 2 ranks) x 2 epochs
    events = list(Path(cfg.paths.tensorboard).glob("events.out.tfevents.*"))
    assert len(events) == 3  # rank 0 only: one file, continued after each checkpoint (4, 8)
    steps = [e.step for e in load_events(cfg.paths.tensorboard).Scalars("train/loss")]
    assert steps == [2, 4, 6, 8, 10, 12]
    assert (Path(cfg.paths.trained) / "model.safetensors").is_file()
    assert result.stderr.count("step 12/12 validation") == 1  # rank 0 speaks alone


def test_killed_gloo_processes_resume_to_the_uninterrupted_weights(prepared, uninterrupted,
                                                                    tmp_path):
    """Each rank's own dropout stream and window sums are saved and restored: the
    resumed 2-process run ends bit for bit where the uninterrupted one did."""
    params = copy_inputs(prepared, tmp_path)
    marker = {MARKER_VAR: f"ddp-{os.getpid()}"}
    kill_after_checkpoint(train_command(tmp_path), ROOT,
                          Path(params["paths"]["checkpoints"]) / CHECKPOINT,
                          {**DIST_ENV, **marker})
    deadline = time.monotonic() + 10  # the ranks die with their SIGKILLed launcher
    while marked_pids(marker[MARKER_VAR]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not marked_pids(marker[MARKER_VAR]), "ranks outlived their killed launcher"
    resumed = run_bounded(train_command(tmp_path), ROOT, timeout=300, env=DIST_ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the checkpoint at step" in resumed.stderr
    weights = load_file(Path(params["paths"]["trained"]) / "model.safetensors")
    reference = uninterrupted[1]
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_a_failing_rank_stops_the_whole_run(prepared):
    root, cfg = prepared
    cmd = torchrun_command(Topology(nproc_per_node=2), ["--params", str(root / "params.yaml")],
                           module="tests.ddp_fail_worker")
    start = time.monotonic()
    result = run_bounded(cmd, ROOT, timeout=120, env=DIST_ENV)
    assert result.returncode != 0
    assert time.monotonic() - start < 60
    assert "injected failure on rank 1" in result.stderr + result.stdout


def test_two_nodes_of_one_process_train_the_model_of_one_node_of_two(prepared, uninterrupted,
                                                                    tmp_path):
    """Node 0 runs the stage and writes everything; node 1 joins, writes nothing."""
    node0 = copy_inputs(prepared, tmp_path / "node0")
    node1 = copy_inputs(prepared, tmp_path / "node1")
    first, code, err = two_nodes(tmp_path / "node0", tmp_path / "node1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert code == 0, err[-3000:]
    assert json.loads(Path(node0["paths"]["train_run"]).read_text())["world_size"] == 2
    weights = load_file(Path(node0["paths"]["trained"]) / "model.safetensors")
    reference = uninterrupted[1]
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    for key in ("trained", "train_metrics", "train_run", "tensorboard"):
        assert not Path(node1["paths"][key]).exists(), key


def test_a_node_with_other_data_is_refused_by_every_node(prepared, tmp_path):
    node0 = copy_inputs(prepared, tmp_path / "node0")
    node1 = copy_inputs(prepared, tmp_path / "node1")
    other = {**node1, "tokenize": {**node1["tokenize"], "max_length": 12}}  # cut elsewhere
    run_stage_main("tokenize", write_params(other, tmp_path / "node1/other.yaml"))
    first, code, err = two_nodes(tmp_path / "node0", tmp_path / "node1")
    assert first.returncode != 0 and code != 0
    for output in (first.stderr, err):
        assert "rank 1 has other tokenized data than rank 0" in output
    assert not Path(node0["paths"]["trained"]).exists()


def test_lora_trains_under_two_gloo_processes(prepared, tmp_path):
    """peft's adapters under DDP: the run completes on both ranks, rank 0 writes the plain
    merged folder and the adapter, and the adapters trained (LoRA's B starts at zero)."""
    from finetuning.inference.model import load_classifier
    from finetuning.training.lora import trainable_parameters, with_lora

    params = copy_inputs(prepared, tmp_path)
    params["train"] = {**params["train"], "method": "lora"}
    write_params(params, tmp_path / "params.yaml")
    result = run_bounded(train_command(tmp_path), ROOT, timeout=300, env=DIST_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = config_from_dict(params)
    figures = json.loads(Path(cfg.paths.train_metrics).read_text())
    assert json.loads(Path(cfg.paths.train_run).read_text())["world_size"] == 2
    single = with_lora(load_classifier(cfg.paths.base_model, cfg.prepare.labels),
                       cfg.train.lora, cfg.paths.base_model)
    assert figures["trainable_parameters"] == trainable_parameters(single)
    trained = Path(cfg.paths.trained)
    merged = load_file(trained / "model.safetensors")
    base = load_file(Path(cfg.paths.base_model) / "model.safetensors")
    assert not [k for k in merged if "lora" in k]
    assert {k.removeprefix("bert.") for k in merged} >= set(base)
    adapter = load_file(trained / "adapter" / "adapter_model.safetensors")
    b_weights = [v for k, v in adapter.items() if "lora_B" in k]
    assert b_weights and all(v.abs().sum() > 0 for v in b_weights)
    assert result.stderr.count("step 12/12 validation") == 1  # rank 0 speaks alone
