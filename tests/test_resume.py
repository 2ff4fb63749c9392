"""Faults: a training run killed with SIGKILL resumes from its checkpoint through
`dvc repro` and ends with the same metrics as an uninterrupted run; reruns repeat exactly."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.conftest import BIN, make_repo_copy, run, tiny_params

LONG = {"epochs": 12, "checkpoint_every": 10}  # 72 steps: time to kill it mid-run


def long_params(tiny_model, tiny_data):
    params = tiny_params(tiny_model, tiny_data)
    params["train"].update(LONG)
    return params


def kill_after_first_checkpoint(repo) -> None:
    """Start `dvc repro`, SIGKILL its whole process group once a checkpoint exists."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (repo / "checkpoints" / "checkpoint.pt").exists():
            assert proc.poll() is None, "training finished before a checkpoint was seen"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (repo / "models" / "finetuned").exists()


def test_killed_training_resumes_to_the_same_metrics(tmp_path, tiny_model, tiny_data):
    params = long_params(tiny_model, tiny_data)
    killed = make_repo_copy(tmp_path / "killed", params)
    kill_after_first_checkpoint(killed)
    resumed = run(["dvc", "repro"], killed)
    assert "resuming from the checkpoint at step" in resumed.stderr

    clean = make_repo_copy(tmp_path / "clean", params)
    run(["dvc", "repro"], clean)
    assert (killed / "metrics/eval.json").read_bytes() == (clean / "metrics/eval.json").read_bytes()
    assert not list((killed / "checkpoints").iterdir())  # cleared once training finished

    from stages.tblog import load_events
    steps = [e.step for e in load_events(killed / "logs/tensorboard").Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 72


def test_checkpoint_from_other_params_is_discarded(tmp_path, tiny_model, tiny_data):
    repo = make_repo_copy(tmp_path / "repo", long_params(tiny_model, tiny_data))
    kill_after_first_checkpoint(repo)
    text = (repo / "params.yaml").read_text().replace("learning_rate: 0.001",
                                                      "learning_rate: 0.002")
    (repo / "params.yaml").write_text(text)
    result = run(["dvc", "repro"], repo)
    assert "discarding checkpoint" in result.stderr
    assert "resuming" not in result.stderr


def test_forced_reruns_give_identical_metrics(tiny_repo):
    run(["dvc", "repro"], tiny_repo)
    first = (tiny_repo / "metrics/eval.json").read_bytes()
    run(["dvc", "repro", "--force"], tiny_repo)
    assert (tiny_repo / "metrics/eval.json").read_bytes() == first
