"""params.yaml validation: every mistake names its key and what is allowed; the topology
(not a param) from the command line or torchrun's PET_* variables."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetuning.config import ConfigError, config_from_dict, load_config
from finetuning.errors import StageError
from finetuning.training.launch import Topology, add_topology_options, torchrun_command
from tests.conftest import repo_params

ROOT = Path(__file__).resolve().parents[1]


def with_repo_paths(params: dict) -> dict:
    """`params` plus the repository's `paths:` (a required section)."""
    return {"paths": repo_params()["paths"], **params}


def test_repo_params_load_with_defaults_matching():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.train.learning_rate == 1e-4
    assert cfg.prepare.labels == ["negative", "positive"]
    assert set(cfg.fetch.ood) == {"tweets", "amazon", "nyt"}


@pytest.mark.parametrize("params, message", [
    ({"train": {"learning_rat": 1e-4}}, "unknown key 'train.learning_rat'"),
    ({"trian": {}}, "unknown key 'trian'"),
    ({"train": {"learning_rate": -1e-4}}, "train.learning_rate must be a float in [0, 1)"),
    ({"train": {"epochs": "3"}}, "train.epochs must be of type int"),
    ({"train": {"epochs": True}}, "train.epochs must be of type int"),
    ({"train": {"precision": "fp8"}}, "train.precision must be one of"),
    ({"prepare": {"labels": ["a"]}}, "prepare.labels must be a list of at least 2"),
    ({"prepare": {"validation_size": 0.5, "test_size": 0.5}}, "validation_size + test_size < 1"),
    ({"tokenize": {"max_length": 2}}, "tokenize.max_length must be an integer in [8, 8192]"),
    ({"fetch": {"ood": {"bad name": "x.csv"}}}, "fetch.ood.bad name"),
    ({"fetch": {"ood": ["x.csv"]}}, "fetch.ood must be a mapping"),
    ({"pretrain": {"dropout": 1.0}}, "pretrain.dropout must be a probability in [0, 1), got 1.0"),
    ({"train": {"schedule": "cyclic"}}, "train.schedule must be one of ('linear', 'cosine',"),
    ({"train": {"num_processes": 2}}, "train.num_processes is no longer a param: use the "
     "train stage's --nproc-per-node option (or PET_NPROC_PER_NODE)"),
])
def test_bad_params_name_the_key(params, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(with_repo_paths(params))
    assert message in str(err.value)


def test_paths_are_required_and_have_no_defaults():
    """params.yaml is the one place paths are declared: none is filled in silently."""
    with pytest.raises(ConfigError, match=r"missing key\(s\): paths"):
        config_from_dict({"train": {"epochs": 1}})
    paths = repo_params()["paths"]
    del paths["finetuned"]
    with pytest.raises(ConfigError, match=r"missing key\(s\) in paths: finetuned"):
        config_from_dict({"paths": paths})


def test_int_accepted_where_float_expected():
    assert config_from_dict(with_repo_paths({"train": {"warmup": 0}})).train.warmup == 0.0


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_repo_paths({"train": {"epochz": 1}})))
    with pytest.raises(ConfigError, match=r"params.yaml: params: unknown key 'train.epochz'"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text", ["3e-05", "3E-5", "1.0e-4", "2e+3"])
def test_exponent_floats_without_a_dot_are_numbers(tmp_path, monkeypatch, text):
    """DVC (`dvc exp run -S train.learning_rate=3e-5`) writes 3e-05, which YAML 1.1 (PyYAML)
    reads as a string; params.yaml is read as YAML 1.2, as DVC reads it."""
    monkeypatch.chdir(tmp_path)  # stages run where params.yaml is
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_repo_paths({})) + f"train:\n  weight_decay: {text}\n")
    assert load_config(path).train.weight_decay == float(text)


def params_in(folder: Path, **paths: str) -> Path:
    """A params.yaml in `folder`: the repository's, with some `paths` changed."""
    params = repo_params()
    params["paths"].update(paths)
    target = folder / "params.yaml"
    target.write_text(yaml.safe_dump(params, sort_keys=False))
    return target


@pytest.mark.parametrize("paths, message", [
    ({"tensorboard": "flows"}, "paths.tensorboard: 'flows' is inside 'flows', part of the "
                               "project itself"),
    ({"checkpoints": ".git/x"}, "paths.checkpoints: '.git/x' is inside '.git'"),
    ({"checkpoints": "/"}, "paths.checkpoints: '/' resolves to /, outside the project"),
    ({"reports": "../reports"}, "paths.reports: '../reports' resolves to"),
    ({"onnx": "."}, "paths.onnx: '.' resolves to"),
    ({"eval_metrics": "dvc.yaml"}, "paths.eval_metrics: 'dvc.yaml' is inside 'dvc.yaml'"),
    ({"plots": "logs"}, "paths.pretrain_tensorboard"),
    ({"plots": "logs"}, "and paths.plots"),
    ({"trained": "models/finetuned"}, "paths.trained"),
])
def test_paths_stay_inside_the_project_clear_of_code_and_each_other(tmp_path, monkeypatch,
                                                                    paths, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(params_in(tmp_path, **paths))
    assert message in str(err.value)


def test_absolute_paths_inside_and_linked_folders_are_fine(tmp_path, monkeypatch):
    project, disk = tmp_path / "project", tmp_path / "big-disk"
    project.mkdir()
    disk.mkdir()
    (project / "data").symlink_to(disk)  # data on another disk
    monkeypatch.chdir(project)
    cfg = load_config(params_in(project, onnx=str(project / "models/onnx")))
    assert cfg.paths.onnx == str(project / "models/onnx")
    assert cfg.paths.raw_data == "data/raw"


def test_a_stage_refuses_a_path_into_code_and_deletes_nothing(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "pipeline.py").write_text("code\n")
    params_in(tmp_path, tensorboard="flows")
    result = subprocess.run([sys.executable, "-m", "stages.train", "--params", "params.yaml"],
                            cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert "paths.tensorboard: 'flows' is inside 'flows'" in result.stderr
    assert (tmp_path / "flows" / "pipeline.py").read_text() == "code\n"


@pytest.mark.parametrize("argv, env, message", [
    (["--nproc-per-node", "0"], {}, "--nproc-per-node (PET_NPROC_PER_NODE) must be >= 1, got 0"),
    ([], {"PET_NNODES": "2", "PET_NODE_RANK": "2"}, "--node-rank (PET_NODE_RANK) must be in "
     "[0, 2) for --nnodes 2, got 2"),
])
def test_bad_topology_names_the_option(argv, env, message, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    add_topology_options(parser)  # reads PET_* when the options are declared, as torchrun
    with pytest.raises(StageError) as err:
        Topology.from_args(parser.parse_args(argv))
    assert message in str(err.value)


def test_topology_comes_from_torchruns_variables_unless_given(monkeypatch):
    monkeypatch.setenv("PET_NPROC_PER_NODE", "4")
    monkeypatch.setenv("PET_MASTER_ADDR", "10.0.0.5")
    parser = argparse.ArgumentParser()
    add_topology_options(parser)
    topology = Topology.from_args(parser.parse_args(["--nnodes", "2", "--node-rank", "1"]))
    assert topology == Topology(4, 2, 1, "10.0.0.5", 29500)
    assert topology.world_size == 8
    assert "--rdzv-backend=static" in torchrun_command(topology, [], "stages.train")
