"""Step arithmetic: accumulation groups, optimizer steps, warmup and decay."""
import pytest
import torch

from finetuning.training.schedule import (accumulation, build_optimizer, steps_per_epoch,
                                          warmup_linear_decay)


def test_accumulation_steps_on_group_ends_and_the_epoch_end():
    plan = [accumulation(i, 7, 3) for i in range(7)]
    assert [update for update, _ in plan] == [False, False, True, False, False, True, True]
    assert [scale for _, scale in plan] == pytest.approx([1 / 3] * 6 + [1.0])
    assert steps_per_epoch(7, 3) == 3 == sum(update for update, _ in plan)


def test_no_accumulation_steps_every_batch():
    assert all(accumulation(i, 5, 1) == (True, 1.0) for i in range(5))
    assert steps_per_epoch(5, 1) == 5


def test_warmup_then_linear_decay_to_zero():
    factor = warmup_linear_decay(total_steps=10, warmup_fraction=0.2)
    values = [factor(s) for s in range(10)]
    assert values[:2] == [0.5, 1.0]
    assert values[2] == 1.0 and values[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(values[1:], values[2:]))
    assert factor(10) == 0.0


def test_no_warmup_starts_at_full_rate():
    assert warmup_linear_decay(4, 0.0)(0) == 1.0


def test_optimizer_skips_decay_on_bias_and_norm():
    model = torch.nn.Sequential()
    model.add_module("dense", torch.nn.Linear(2, 2))
    model.add_module("LayerNorm", torch.nn.LayerNorm(2))
    opt = build_optimizer(model, 1e-3, 0.1, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and len(decay["params"]) == 1
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
