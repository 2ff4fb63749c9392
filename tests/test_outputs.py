"""A stage's outputs land together: all of them or none, also when the stage is killed
between two of them (the next stage finishes the commit before reading anything)."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from finetuning.outputs import read_json, stage_outputs
from tests.conftest import ROOT, paths_under, run_stage_main, tiny_params, write_params


def test_a_failing_block_leaves_the_previous_outputs_and_no_staged_files(tmp_path):
    folder, metrics = tmp_path / "out", tmp_path / "metrics.json"
    with stage_outputs() as out:
        (out.dir(folder) / "a.txt").write_text("first")
        out.json(metrics, {"run": 1})
    with pytest.raises(RuntimeError), stage_outputs() as out:
        (out.dir(folder) / "a.txt").write_text("second")
        out.json(metrics, {"run": 2})
        raise RuntimeError("the stage failed before its end")
    assert (folder / "a.txt").read_text() == "first" and read_json(metrics) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "out"]


def test_a_stage_killed_between_its_outputs_is_finished_by_the_next_stage(tmp_path, tiny_model,
                                                                         tiny_data):
    params = {**tiny_params(tiny_model, tiny_data), "paths": paths_under(tmp_path)}
    paths = params["paths"]
    first = write_params(params, tmp_path / "params.yaml")
    for stage in ("fetch", "prepare"):
        run_stage_main(stage, first)
    before = read_json(paths["prepare_metrics"])["rows"]["validation"]
    params["prepare"].update(validation_size=0.25, test_size=0.25)  # other split sizes
    second = write_params(params, tmp_path / "params.yaml")
    killed = subprocess.run([sys.executable, "-m", "tests.kill_between_outputs", "prepare",
                             "--params", str(second)], cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]

    def rows() -> tuple[int, int]:  # validation rows: by the metrics, in the parquet file
        counted = read_json(paths["prepare_metrics"])["rows"]["validation"]
        return counted, len(pd.read_parquet(f"{paths['prepared']}/validation.parquet"))
    assert before != 16 and rows() == (before, 16)  # a mix: the new splits, the old counts
    journals = list((tmp_path / "data").glob(".*.commit.json"))
    assert len(journals) == 1 and len(json.loads(journals[0].read_text())) == 2

    run_stage_main("tokenize", second)  # reads the prepared splits: finishes the commit
    assert rows() == (16, 16)  # a quarter of 60 rows by label: all from the killed run
    leftovers = [p for folder in (tmp_path / "data", tmp_path / "metrics")
                 for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == []
