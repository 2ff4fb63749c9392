"""params.yaml validation: every mistake names its key and what is allowed."""
from pathlib import Path

import pytest
import yaml

from finetuning.config import ConfigError, config_from_dict, load_config
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
    ({"train": {"schedule": "cyclic"}}, "train.schedule must be one of ('linear', 'cosine',"),
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
def test_exponent_floats_without_a_dot_are_numbers(tmp_path, text):
    """DVC (`dvc exp run -S train.learning_rate=3e-5`) writes 3e-05, which YAML 1.1 (PyYAML)
    reads as a string; params.yaml is read as YAML 1.2, as DVC reads it."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_repo_paths({})) + f"train:\n  weight_decay: {text}\n")
    assert load_config(path).train.weight_decay == float(text)
