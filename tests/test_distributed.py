"""DDP through torchrun on CPU (gloo, 2 processes): one model and one log, an exact
resume after a kill, and a failing rank that stops the run."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from finetuning.config import config_from_dict
from finetuning.monitoring.events import load_events
from finetuning.training.launch import torchrun_command
from finetuning.training.checkpoint import CHECKPOINT
from tests.conftest import (ROOT, kill_after_checkpoint, paths_under, run_bounded,
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
    params["train"].update(num_processes=2, batch_size=4, select="last")
    params_file = write_params(params, root / "params.yaml")
    for stage in ("fetch", "prepare", "tokenize"):
        run_stage_main(stage, params_file)
    return root, config_from_dict(params)


def train_command(root: Path) -> list[str]:
    """The train stage on `root`'s params, as dvc.yaml runs it."""
    return [sys.executable, "-m", "stages.train", "--params", str(root / "params.yaml")]


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
    root, cfg = prepared
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["paths"] = paths_under(tmp_path)
    for key in ("base_model", "tokenized", "prepared"):
        shutil.copytree(getattr(cfg.paths, key), params["paths"][key])
    write_params(params, tmp_path / "params.yaml")
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
    cmd = torchrun_command(cfg.train, ["--params", str(root / "params.yaml")],
                           module="tests.ddp_fail_worker")
    start = time.monotonic()
    result = run_bounded(cmd, ROOT, timeout=120, env=DIST_ENV)
    assert result.returncode != 0
    assert time.monotonic() - start < 60
    assert "injected failure on rank 1" in result.stderr + result.stdout
