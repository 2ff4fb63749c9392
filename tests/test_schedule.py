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


def tiny_step_setup(tiny_model, scaler: torch.amp.GradScaler):
    """The tiny classifier, one batch and its Optim (linear schedule over 10 steps)."""
    from transformers import BertForSequenceClassification

    from finetuning.training.loop import Optim

    model = BertForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optim = Optim(optimizer, build_scheduler(optimizer, Train(warmup=0.0), 10), scaler, 1.0)
    batch = {"input_ids": torch.tensor([[2, 5, 6, 3]]),
             "attention_mask": torch.ones(1, 4, dtype=torch.int64), "labels": torch.tensor([1])}
    return model, optim, batch


def test_an_fp16_overflow_skips_the_optimizer_step_and_the_schedule(tiny_model):
    import contextlib

    from finetuning.training.loop import train_step

    model, optim, batch = tiny_step_setup(tiny_model, torch.amp.GradScaler("cpu"))
    weights = model.classifier.weight
    hook = weights.register_hook(lambda grad: grad * float("inf"))  # an overflow
    before = weights.detach().clone()
    _, _, norm = train_step(model, batch, optim, contextlib.nullcontext(), 1.0, True)
    assert not torch.isfinite(norm) and torch.equal(weights, before)
    assert optim.scheduler.last_epoch == 0  # the schedule waits for a real step
    hook.remove()
    model.zero_grad()
    _, _, norm = train_step(model, batch, optim, contextlib.nullcontext(), 1.0, True)
    assert torch.isfinite(norm) and not torch.equal(weights, before)
    assert optim.scheduler.last_epoch == 1


def test_the_window_leaves_inf_grad_norms_out_and_keeps_its_time_on_resume():
    import time

    from finetuning.training.runtime import Runtime
    from finetuning.training.window import Window

    window = Window.create(2, torch.device("cpu"))
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.int64), "labels": torch.tensor([0, 1])}
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for norm in (float("inf"), 2.0, 4.0):
        window.add(1, torch.tensor(0.5), logits, batch, torch.tensor(norm), real_tokens=6)
    window.started -= 3.0  # the window has been open for 3 s
    resumed = Window.create(2, torch.device("cpu"))
    resumed.load_state_dict(window.state_dict())
    assert time.perf_counter() - resumed.started == pytest.approx(3.0, abs=0.5)
    figures = resumed.flush(Runtime(torch.device("cpu")))
    assert figures["grad_norm"] == 3.0  # (2 + 4) / 2: the overflow is not averaged in
    assert figures["samples_per_second"] == pytest.approx(6 / 3.0, rel=0.2)
