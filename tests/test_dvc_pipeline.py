"""End to end through the real `dvc` CLI on a temporary copy of the repo (tiny config)."""
from __future__ import annotations

import json
import re

import yaml

from tests.conftest import ROOT, run

STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def ran(output: str) -> list[str]:
    """Stages DVC says it ran, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def leaf_values(tree: dict) -> list:
    """Every non-dict value of a nested dict."""
    return [x for v in tree.values()
            for x in (leaf_values(v) if isinstance(v, dict) else [v])]


def touch_code(path) -> None:
    """Change a code file the way an edit would, without changing what it does."""
    path.write_text(path.read_text() + "# edited\n")


def test_repro_is_cached_and_experiments_compare(reproduced, reproduced_repo):
    tiny_repo = reproduced_repo
    assert sorted(ran(reproduced[1])) == sorted(STAGES)
    for path in ["models/finetuned/model.safetensors", "metrics/eval.json", "reports/report.md",
                 "logs/tensorboard", "dvc.lock"]:
        assert (tiny_repo / path).exists(), path
    again = run(["dvc", "repro"], tiny_repo)
    assert ran(again.stdout) == [] and "up to date" in again.stdout
    assert run(["dvc", "status"], tiny_repo).stdout.strip().endswith("up to date.")
    # DVC metrics are the figures that compare runs: scores, the baseline's, the train
    # summary, pretraining's, the export's speed; counts, lengths and hardware are plain
    # outputs.
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], tiny_repo).stdout)
    files = shown[""]["data"]
    assert set(files) == {f"metrics/{n}.json"
                          for n in ("eval", "baseline", "train", "export", "pretrain")}
    leaves = [v for f in files.values() for v in leaf_values(f["data"])]
    assert leaves and all(isinstance(v, (int, float)) for v in leaves)  # no strings

    # A stage reruns when code it runs changes, and only then.
    touch_code(tiny_repo / "finetuning/reporting/sections.py")
    assert set(json.loads(run(["dvc", "status", "--json"], tiny_repo).stdout)) == {"report"}
    assert ran(run(["dvc", "repro"], tiny_repo).stdout) == ["report"]
    touch_code(tiny_repo / "finetuning/data/tokenization.py")
    # Tokenized again, byte for byte the same: train and evaluate stay cached. Export runs
    # the same tokenization for its texts, so it reruns (and, with new timings, what
    # reads its metrics).
    rerun = ran(run(["dvc", "repro"], tiny_repo).stdout)
    assert rerun[:2] == ["tokenize", "export"] and set(rerun) <= {"tokenize", "export",
                                                                  "report", "card"}

    # `dvc exp run`, metrics/params/plots diff: the README's commands, as written, in
    # tests/test_report.py::test_readme_commands_work_and_plots_diff_shows_both_runs


def test_unknown_param_key_stops_with_one_message_and_no_outputs(tiny_repo):
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["train"]["learning_rat"] = 0.1
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], tiny_repo, check=False)
    assert result.returncode != 0
    assert "unknown key 'train.learning_rat'" in result.stderr + result.stdout
    assert not (tiny_repo / "data" / "raw").exists()
