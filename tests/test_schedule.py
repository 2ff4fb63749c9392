"""Step arithmetic: accumulation groups, optimizer steps, warmup and decay."""
import pytest
import torch

from finetuning.config import Train
from finetuning.training.schedule import (accumulation, build_optimizer, build_scheduler,
                                          steps_per_epoch, warmup_steps)


def test_accumulation_steps_on_group_ends_and_the_epoch_end():
    plan = [accumulation(i, 7, 3) for i in range(7)]
    assert [update for update, _ in plan] == [False, False, True, False, False, True, True]
    assert [scale for _, scale in plan] == pytest.approx([1 / 3] * 6 + [1.0])
    assert steps_per_epoch(7, 3) == 3 == sum(update for update, _ in plan)


def test_no_accumulation_steps_every_batch():
    assert all(accumulation(i, 5, 1) == (True, 1.0) for i in range(5))
    assert steps_per_epoch(5, 1) == 5


def learning_rates(schedule: str, total: int, warmup: float) -> list[float]:
    """The learning rate of each optimizer step 0..total under `train.schedule`."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = build_scheduler(optimizer, Train(schedule=schedule, warmup=warmup), total)
    rates = []
    for _ in range(total + 1):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_linear_warmup_then_linear_decay_to_zero():
    rates = learning_rates("linear", total=10, warmup=0.2)
    assert rates[:3] == pytest.approx([0.0, 0.5, 1.0])  # transformers: step 0 at rate 0
    assert rates[3:] == pytest.approx([(10 - s) / 8 for s in range(3, 11)])
    assert rates[-1] == 0.0


def test_cosine_and_constant_after_the_same_warmup():
    cosine = learning_rates("cosine", total=10, warmup=0.2)
    assert cosine[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert cosine[6] == pytest.approx(0.5) and cosine[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(cosine[2:], cosine[3:]))
    constant = learning_rates("constant", total=10, warmup=0.2)
    assert constant == pytest.approx([0.0, 0.5] + [1.0] * 9)


def test_no_warmup_starts_at_full_rate():
    assert learning_rates("linear", total=4, warmup=0.0)[0] == 1.0
    assert warmup_steps(795, 0.1) == 80 and warmup_steps(10, 0.0) == 0


def test_optimizer_skips_decay_on_bias_and_norm():
    model = torch.nn.Sequential()
    model.add_module("dense", torch.nn.Linear(2, 2))
    model.add_module("LayerNorm", torch.nn.LayerNorm(2))
    opt = build_optimizer(model, 1e-3, 0.1, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and len(decay["params"]) == 1
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
