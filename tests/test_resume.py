"""Faults: a training run killed with SIGKILL resumes from its checkpoint through
`dvc repro` and ends with the same model and metrics as an uninterrupted run (reruns
repeat exactly: tests/test_stages.py::test_runs_are_deterministic); a checkpoint from
other settings is never resumed."""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import yaml

from finetuning.config import config_from_dict
from finetuning.monitoring.events import load_events
from finetuning.training.checkpoint import (CHECKPOINT, fingerprint, load_checkpoint,
                                            save_checkpoint)
from tests.conftest import (BIN, kill_after_checkpoint, paths_under, run, tiny_params,
                            write_params)

MODEL = "models/trained/model.safetensors"


def kill_after_first_checkpoint(repo, *args: str) -> None:
    """Start `dvc repro <args>`, SIGKILL its process group once a checkpoint exists."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    kill_after_checkpoint(["dvc", "repro", *args], repo, repo / "checkpoints" / CHECKPOINT, env)


def test_killed_training_resumes_exactly(reproduced_repo):
    repo = reproduced_repo  # fetch, prepare and tokenize are done and stay so
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=8, checkpoint_every=10)  # 48 steps: time to kill it
    write_params(params, repo / "params.yaml")
    run(["dvc", "repro", "evaluate"], repo)  # what eval.json needs; the rest is tested apart
    model, metrics = (repo / MODEL).read_bytes(), (repo / "metrics/eval.json").read_bytes()

    kill_after_first_checkpoint(repo, "--force", "--single-item", "train")
    resumed = run(["dvc", "repro", "evaluate"], repo)
    assert "resuming from the checkpoint at step 10" in resumed.stderr
    assert (repo / MODEL).read_bytes() == model
    assert (repo / "metrics/eval.json").read_bytes() == metrics
    assert not list((repo / "checkpoints").iterdir())  # cleared once training finished
    steps = [e.step for e in load_events(repo / "logs/tensorboard").Scalars("train/loss")]
    assert steps == list(range(2, 49, 2))  # no duplicated or missing steps


def test_checkpoint_from_other_settings_is_discarded(tmp_path, tiny_model, tiny_data, caplog):
    params = tiny_params(tiny_model, tiny_data)
    params["paths"] = paths_under(tmp_path)
    params["paths"]["base_model"] = str(tiny_model)
    (tmp_path / "data/tokenized/train").mkdir(parents=True)
    (tmp_path / "data/tokenized/train/state.json").write_text('{"_fingerprint": "abc"}')
    cfg = config_from_dict(params)
    same = replace(cfg, train=replace(cfg.train, threads=2, checkpoint_every=7))
    other = replace(cfg, train=replace(cfg.train, learning_rate=2e-3))
    assert fingerprint(same, 1) == fingerprint(cfg, 1) != fingerprint(other, 1)
    # the world size counts: it sets the shards and the steps
    assert fingerprint(cfg, 2) != fingerprint(cfg, 1)
    # so does the data
    state, before = tmp_path / "data/tokenized/train/state.json", fingerprint(cfg, 1)
    state.write_text('{"_fingerprint": "abd"}')
    assert fingerprint(cfg, 1) != before
    state.write_text('{"_fingerprint": "abc"}')
    # the same architecture with other weights of the same size is another base
    base = Path(shutil.copytree(tiny_model, tmp_path / "other-base"))
    weights = bytearray((base / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (base / "model.safetensors").write_bytes(bytes(weights))
    assert fingerprint(replace(cfg, paths=replace(cfg.paths, base_model=str(base))), 1) \
        != fingerprint(cfg, 1)

    save_checkpoint(cfg.paths.checkpoints, {"fingerprint": fingerprint(cfg, 1), "progress": {}})
    assert load_checkpoint(cfg.paths.checkpoints, fingerprint(same, 1)) is not None
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(cfg.paths.checkpoints, fingerprint(other, 1)) is None
    assert "discarding checkpoint" in caplog.text
    assert not list((tmp_path / "checkpoints").iterdir())
