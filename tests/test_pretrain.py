"""The pretrain stage: the fetched base passed through at no cost, a tokenizer and BERT
built from scratch (learnt from the train split only), masked-LM pretraining that learns,
logs to TensorBoard and resumes bit-exactly after a kill, and fine-tuning on its base."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from finetuning.config import config_from_dict
from finetuning.monitoring.events import read_scalars
from finetuning.pretraining.base import POINTER, base_of
from finetuning.pretraining.corpus import train_texts
from finetuning.pretraining.scratch import train_tokenizer
from finetuning.training.checkpoint import CHECKPOINT
from tests.conftest import (BIN, ROOT, kill_after_checkpoint, paths_under, run_stage_main,
                            tiny_params, write_params)

SCRATCH = {"vocab_size": 120, "layers": 2, "hidden_size": 32, "heads": 2,
           "intermediate_size": 64, "max_positions": 64}
TAGS = {"pretrain/loss", "pretrain/masked_accuracy", "pretrain/perplexity",
        "pretrain/learning_rate"}


def prepared_root(root: Path, params: dict) -> Path:
    """`params` (paths under `root`) written, fetched and prepared; the params file."""
    params = {**params, "paths": paths_under(root)}
    params_file = write_params(params, root / "params.yaml")
    for stage in ("fetch", "prepare"):
        run_stage_main(stage, params_file)
    return params_file


def load(params_file: Path):
    import yaml

    return config_from_dict(yaml.safe_load(params_file.read_text()))


def test_steps_0_passes_the_fetched_base_through_without_loading_torch(tmp_path, tiny_model,
                                                                        tiny_data):
    params_file = prepared_root(tmp_path, tiny_params(tiny_model, tiny_data))
    probe = ("import runpy, sys; sys.argv = ['pretrain', '--params', sys.argv[1]]\n"
             "try: runpy.run_module('stages.pretrain', run_name='__main__')\n"
             "except SystemExit as e: sys.exit(e.code)\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(params_file)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
    cfg = load(params_file)
    written = sorted(p.name for p in Path(cfg.paths.pretrained).iterdir())
    assert written == [POINTER]  # no weights copied
    assert base_of(cfg.paths) == Path(cfg.paths.base_model)
    assert json.loads(Path(cfg.paths.pretrain_metrics).read_text()) == {"steps": 0}
    assert Path(cfg.paths.pretrain_tensorboard).is_dir()  # empty, but there for DVC


def test_scratch_tokenizer_keeps_chinese_characters_apart_and_reads_train_only(tmp_path):
    frames = {"train": ["这个手机很好用", "质量太差了"], "validation": ["物流很快"],
              "test": ["服务态度差"]}
    for split, texts in frames.items():
        pd.DataFrame({"text": texts, "label": [0] * len(texts)}).to_parquet(
            tmp_path / f"{split}.parquet")
    texts = train_texts(tmp_path)
    assert texts == frames["train"]
    tokenizer = train_tokenizer(texts * 10, 200, 64)
    assert tokenizer.tokenize("手机很好") == ["手", "机", "很", "好"]
    assert "物" not in tokenizer.get_vocab()  # a validation-only character is unknown
    assert tokenizer.tokenize("物") == ["[UNK]"]
    encoded = tokenizer("很好", "太差")
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory, tiny_model, tiny_data):
    """A scratch base pretrained 60 steps, fetched and prepared once; its params file."""
    root = tmp_path_factory.mktemp("scratch")
    params = tiny_params(tiny_model, tiny_data)
    params["fetch"]["model"] = "scratch"
    params["scratch"] = SCRATCH
    params["pretrain"].update(steps=60, batch_size=8, learning_rate=3e-3, max_length=32,
                              log_every=5, checkpoint_every=20, threads=1)
    params_file = prepared_root(root, params)
    run_stage_main("pretrain", params_file)
    return params_file


def test_masked_lm_pretraining_learns_and_logs(scratch_run):
    cfg = load(scratch_run)
    figures = json.loads(Path(cfg.paths.pretrain_metrics).read_text())
    assert figures["steps"] == 60 and figures["vocab_size"] <= SCRATCH["vocab_size"]
    assert figures["perplexity"] == pytest.approx(math.exp(figures["loss"]), rel=1e-3)
    scalars = read_scalars(cfg.paths.pretrain_tensorboard)
    assert TAGS <= set(scalars)
    assert [s for s, _ in scalars["pretrain/loss"]] == list(range(5, 61, 5))
    losses = [v for _, v in scalars["pretrain/loss"]]
    assert losses[0] > math.log(figures["vocab_size"]) - 1  # starts near uniform guessing
    assert losses[-1] < losses[0] - 1.0  # and learns the synthetic words
    folder = Path(cfg.paths.pretrained)
    assert base_of(cfg.paths) == folder
    weights = load_file(folder / "model.safetensors")
    assert not any(k.startswith(("cls.", "pooler.")) for k in weights)  # encoder only
    assert not list(Path(cfg.paths.pretrain_checkpoints).iterdir())  # cleared at the end


def stage_command(params_file: Path) -> list[str]:
    return [str(BIN / "python"), "-m", "stages.pretrain", "--params", str(params_file)]


def test_killed_pretraining_resumes_exactly(tmp_path, tiny_model, tiny_data):
    """Further pretraining of a fetched base (a scratch tokenizer is learnt anew by each
    fresh run, see the next test): killed after its first checkpoint, resumed, it ends
    with the uninterrupted run's weights and log."""
    params = tiny_params(tiny_model, tiny_data)
    params["pretrain"].update(steps=60, batch_size=8, learning_rate=1e-3, max_length=32,
                              log_every=5, checkpoint_every=20, threads=1)
    params_file = prepared_root(tmp_path, params)
    cfg = load(params_file)
    subprocess.run(stage_command(params_file), cwd=ROOT, check=True, capture_output=True)
    done = load_file(Path(cfg.paths.pretrained) / "model.safetensors")
    logged = read_scalars(cfg.paths.pretrain_tensorboard)
    assert "pooler.dense.weight" in done  # the fetched base's trained pooler is kept
    kill_after_checkpoint(stage_command(params_file), ROOT,
                          Path(cfg.paths.pretrain_checkpoints) / CHECKPOINT)
    resumed = subprocess.run(stage_command(params_file), cwd=ROOT, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming pretraining from the checkpoint at step 20" in resumed.stderr
    again = load_file(Path(cfg.paths.pretrained) / "model.safetensors")
    assert again.keys() == done.keys()
    assert all((again[k] == done[k]).all() for k in done)  # bit-exact on the CPU
    assert read_scalars(cfg.paths.pretrain_tensorboard) == logged  # no step twice or lost


def test_a_resumed_scratch_run_keeps_the_tokenizer_it_learnt(scratch_run):
    cfg = load(scratch_run)
    kept = Path(cfg.paths.pretrain_checkpoints) / "tokenizer" / "tokenizer.json"
    kill_after_checkpoint(stage_command(scratch_run), ROOT,
                          Path(cfg.paths.pretrain_checkpoints) / CHECKPOINT)
    learnt = json.loads(kept.read_text())["model"]["vocab"]
    resumed = subprocess.run(stage_command(scratch_run), cwd=ROOT, capture_output=True,
                             text=True)
    assert "resuming pretraining from the checkpoint at step 20" in resumed.stderr
    written = json.loads((Path(cfg.paths.pretrained) / "tokenizer.json").read_text())
    assert written["model"]["vocab"] == learnt


def test_fine_tuning_starts_from_the_pretrained_base(scratch_run):
    for stage in ("tokenize", "train"):
        run_stage_main(stage, scratch_run)
    cfg = load(scratch_run)
    base = load_file(Path(cfg.paths.pretrained) / "model.safetensors")
    tokenizer = json.loads((Path(cfg.paths.trained) / "tokenizer.json").read_text())
    assert tokenizer["model"]["vocab"] == json.loads(
        (Path(cfg.paths.pretrained) / "tokenizer.json").read_text())["model"]["vocab"]
    trained = load_file(Path(cfg.paths.trained) / "model.safetensors")
    assert trained["bert.embeddings.word_embeddings.weight"].shape == \
        base["embeddings.word_embeddings.weight"].shape
    assert "bert.pooler.dense.weight" in trained  # initialised deliberately, then trained


def test_a_batch_with_no_masked_token_leaves_the_logged_figures_finite():
    import torch

    from finetuning.pretraining.mlm import Figures

    figures = Figures.zeros(torch.device("cpu"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    figures.add(torch.tensor(0.5), logits, torch.tensor([0, 0]))  # 1 of 2 right
    figures.add(torch.tensor(float("nan")), logits[:0], torch.tensor([], dtype=torch.long))
    figures.add(torch.tensor(2.0), logits[1:], torch.tensor([1]))  # right
    means = figures.means()
    assert means["loss"] == pytest.approx((0.5 * 2 + 2.0) / 3)  # per masked token
    assert means["masked_accuracy"] == pytest.approx(2 / 3)
    assert means["perplexity"] == pytest.approx(math.exp(1.0))


def test_the_masked_only_head_gives_the_models_own_loss_and_gradients():
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from finetuning.pretraining.mlm import IGNORED, masked_lm

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32)).eval()
    ids = torch.randint(5, 50, (3, 9))
    labels = torch.where(torch.rand(3, 9) < 0.3, ids, IGNORED)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    loss, logits, kept = masked_lm(model, batch)
    loss.backward()
    ours = model.cls.predictions.transform.dense.weight.grad.clone()
    model.zero_grad()
    full = model(**batch)
    full.loss.backward()
    assert loss.item() == pytest.approx(full.loss.item(), abs=1e-6)
    assert torch.equal(kept, labels[labels != IGNORED]) and logits.shape == (len(kept), 50)
    assert torch.allclose(ours, model.cls.predictions.transform.dense.weight.grad, atol=1e-6)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_pretrain_dropout_is_the_runs_and_the_base_keeps_its_own(dropout):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from finetuning.config import Pretrain
    from finetuning.pretraining.mlm import MlmRun

    tokenizer = train_tokenizer(["好评 很好", "差评 不好"], 100, 16)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16,
                                       num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
    MlmRun(Pretrain(steps=1, dropout=dropout), model, tokenizer, [[2, 5, 6, 3]],
           torch.device("cpu"), "run")
    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {dropout}
    ids = torch.tensor([[2, 5, 6, 5, 6, 3]])
    model.train()
    first, second = (model.base_model(input_ids=ids).last_hidden_state for _ in range(2))
    assert torch.equal(first, second) == (dropout == 0.0)
    assert model.config.hidden_dropout_prob == 0.1  # what fine-tuning will use
    assert model.config.attention_probs_dropout_prob == 0.1
