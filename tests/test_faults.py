"""Numerical faults and bad input at the stage command line: one clear message, a non-zero
exit, and nothing half-written where the next stage would read it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from finetuning.config import config_from_dict
from finetuning.errors import StageError
from finetuning.training.checkpoint import CHECKPOINT
from finetuning.training.runtime import init_runtime
from finetuning.training.session import build_trainer
from tests.conftest import ROOT, paths_under, repo_params, run_stage_main, tiny_params, write_params


class NaNAfter(torch.nn.Module):
    """Wraps a classifier; its logits turn NaN from the `after`-th forward call on."""

    def __init__(self, inner: torch.nn.Module, after: int):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, **inputs):
        out = self.inner(**inputs)
        self.calls += 1
        if self.calls >= self.after:
            out.logits = out.logits * float("nan")
        return out


@pytest.fixture
def tiny_cfg(tmp_path, tiny_model, tiny_data):
    params = {**tiny_params(tiny_model, tiny_data), "paths": paths_under(tmp_path)}
    run_stage_main("fetch", write_params(params, tmp_path / "params.yaml"))
    return tmp_path, params, config_from_dict(params)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_cfg):
    root, _, cfg = tiny_cfg
    for stage in ("prepare", "tokenize"):
        run_stage_main(stage, root / "params.yaml")
    trainer, _ = build_trainer(cfg, init_runtime(1))
    trainer.model = NaNAfter(trainer.module, after=7)  # step 7 is the first bad one
    with pytest.raises(StageError) as err:
        trainer.fit()
    message = str(err.value)
    assert "non-finite loss at step 7 (seen at step 8)" in message
    assert "last good checkpoint (step 4)" in message and "train.learning_rate" in message
    state = torch.load(Path(cfg.paths.checkpoints) / CHECKPOINT, weights_only=True)
    assert state["progress"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def run_stage(stage: str, root: Path, params: dict) -> subprocess.CompletedProcess:
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--params",
                           str(root / "params.yaml")], cwd=ROOT, capture_output=True, text=True)


BAD_CSV = {
    "missing column": (b"review,label\nok,1\n", "missing column(s) ['text']"),
    "non-utf8": (b"text,label\ncaf\xe9,1\n", "line 2 is not valid UTF-8"),
    "label outside set": (b"text,label\nok,neutral\n", "has label 'neutral'"),
    "header only": (b"text,label\n", "has a header but no rows"),
}


@pytest.mark.parametrize("case", BAD_CSV)
def test_bad_csv_stops_prepare_with_no_outputs(tiny_cfg, case):
    root, params, cfg = tiny_cfg
    content, message = BAD_CSV[case]
    (Path(cfg.paths.raw_data) / "main" / "000-reviews.csv").write_bytes(content)
    result = run_stage("prepare", root, params)
    assert result.returncode == 1
    assert message in result.stderr and "000-reviews.csv" in result.stderr
    assert "Traceback" not in result.stderr
    assert not Path(cfg.paths.prepared).exists()
    assert not Path(cfg.paths.prepare_metrics).exists()
    assert not list(Path(cfg.paths.prepared).parent.glob(".*tmp*"))


def test_missing_data_file_stops_fetch_with_no_outputs(tmp_path, tiny_model):
    params = {**repo_params(), "paths": paths_under(tmp_path)}
    params["fetch"].update(data=str(tmp_path / "nope.csv"), ood={}, model=str(tiny_model))
    result = run_stage("fetch", tmp_path, params)
    assert result.returncode == 1
    assert f"data source {tmp_path / 'nope.csv'} does not exist" in result.stderr
    assert not (tmp_path / "data" / "raw").exists() and not (tmp_path / "models" / "base").exists()


def test_failed_rerun_keeps_the_previous_good_output(tiny_cfg):
    root, params, cfg = tiny_cfg
    assert run_stage("prepare", root, params).returncode == 0
    good = (Path(cfg.paths.prepared) / "train.parquet").read_bytes()
    (Path(cfg.paths.raw_data) / "main" / "000-reviews.csv").write_bytes(b"text,label\n")
    assert run_stage("prepare", root, params).returncode == 1
    assert (Path(cfg.paths.prepared) / "train.parquet").read_bytes() == good


def test_class_too_small_to_split(tiny_cfg):
    root, params, cfg = tiny_cfg
    (Path(cfg.paths.raw_data) / "main" / "000-reviews.csv").write_text(
        "text,label\n" + "".join(f"good {i},positive\n" for i in range(10)) + "bad,negative\n")
    result = run_stage("prepare", root, params)
    assert result.returncode == 1 and "class 'negative' has only 1 row(s)" in result.stderr
