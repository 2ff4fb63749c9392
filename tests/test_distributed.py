"""DDP through torchrun on CPU (gloo, 2 processes), and mixed precision on CPU."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetuning.config import config_from_dict
from finetuning.monitoring.events import load_events
from finetuning.training.launch import torchrun_command
from tests.conftest import ROOT, paths_under, run_stage_main, tiny_params, write_params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model, tiny_data):
    """Tokenized tiny data in a folder, and a params file for 2-process training."""
    root = tmp_path_factory.mktemp("ddp")
    params = {**tiny_params(tiny_model, tiny_data), "paths": paths_under(root)}
    params["train"].update(num_processes=2, batch_size=4)  # effective batch 8, as single
    params_file = write_params(params, root / "params.yaml")
    for stage in ("fetch", "prepare", "tokenize"):
        run_stage_main(stage, params_file)
    return root, config_from_dict(params)


def test_two_gloo_processes_train_one_model_and_one_log(prepared):
    root, cfg = prepared
    result = subprocess.run([sys.executable, "-m", "stages.train", "--params",
                             str(root / "params.yaml")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(Path(cfg.paths.train_metrics).read_text())
    assert json.loads(Path(cfg.paths.train_run).read_text())["world_size"] == 2
    assert figures["steps"] == 12  # 48 rows / (4 per rank x 2 ranks) x 2 epochs
    events = list(Path(cfg.paths.tensorboard).glob("events.out.tfevents.*"))
    assert len(events) == 3  # rank 0 only: one file, continued after each checkpoint (4, 8)
    steps = [e.step for e in load_events(cfg.paths.tensorboard).Scalars("train/loss")]
    assert steps == [2, 4, 6, 8, 10, 12]
    assert (Path(cfg.paths.trained) / "model.safetensors").is_file()
    assert result.stderr.count("step 12/12 validation") == 1  # rank 0 speaks alone


def test_a_failing_rank_stops_the_whole_run(prepared):
    root, cfg = prepared
    cmd = torchrun_command(cfg.train, ["--params", str(root / "params.yaml")],
                           module="tests.ddp_fail_worker")
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert time.monotonic() - start < 60
    assert "injected failure on rank 1" in result.stderr + result.stdout
