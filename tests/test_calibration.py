"""Temperature scaling and the checkpoint choice, on numbers whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finetuning.errors import StageError
from finetuning.metrics import expected_calibration_error, reliability
from finetuning.training.calibration import fit_temperature, fold_temperature, output_layer
from finetuning.training.selection import Selection


def sampled(temperature: float, rows: int = 20000, classes: int = 3, seed: int = 0):
    """Labels drawn from softmax(z), and logits `z * temperature`: a model overconfident
    (T > 1) or underconfident (T < 1) by exactly `temperature`."""
    gen = torch.Generator().manual_seed(seed)
    true = torch.randn(rows, classes, generator=gen) * 2
    labels = torch.multinomial(true.softmax(-1), 1, generator=gen).squeeze(1)
    return true * temperature, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_fitted_temperature_is_the_one_that_distorted_the_logits(temperature):
    logits, labels = sampled(temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(temperature, rel=0.05)
    before = F.cross_entropy(logits, labels)
    assert F.cross_entropy(logits / fitted, labels) <= before + 1e-6
    for t in (fitted * 0.9, fitted * 1.1):  # a minimum: both neighbours are worse
        assert F.cross_entropy(logits / t, labels) > F.cross_entropy(logits / fitted, labels)


def test_calibration_lowers_ece_of_an_overconfident_model():
    logits, labels = sampled(3.0)
    probs = lambda z: z.softmax(-1).numpy()  # noqa: E731
    before = expected_calibration_error(probs(logits), labels.numpy())
    after = expected_calibration_error(probs(logits / fit_temperature(logits, labels)),
                                       labels.numpy())
    assert before > 0.1 and after < 0.02


def test_reliability_bins_count_every_row_and_match_the_ece():
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.42, 0.58], [0.3, 0.7], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 1, 0])
    bins = reliability(probs, labels)
    assert sum(rows for *_, rows in bins) == 5
    # (hi, mean confidence, accuracy, rows): 0.55 and 0.58 share (8/15, 9/15]
    assert [(round(hi, 4), rows) for hi, _, _, rows in bins] == [(0.6, 2), (0.7333, 1),
                                                                 (0.9333, 1), (1.0, 1)]
    by_hand = (2 * abs(1 - 0.565) + abs(1 - 0.7) + abs(0 - 0.9) + abs(1 - 0.95)) / 5
    assert expected_calibration_error(probs, labels) == pytest.approx(by_hand)


def tiny_classifier(kind: str):
    from transformers import (BertConfig, BertForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)

    torch.manual_seed(0)
    common = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=40, num_labels=3)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(**common)).eval()
    return RobertaForSequenceClassification(RobertaConfig(**common, pad_token_id=1)).eval()


@pytest.mark.parametrize("kind,layer", [("bert", "classifier"),
                                        ("roberta", "classifier.out_proj")])
def test_folding_divides_the_logits_and_keeps_every_prediction(kind, layer):
    model = tiny_classifier(kind)
    assert output_layer(model) is model.get_submodule(layer)
    ids = torch.randint(3, 50, (64, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        fold_temperature(model, 2.5)
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before / 2.5, rtol=1e-5, atol=1e-6)
    assert torch.equal(after.argmax(-1), before.argmax(-1))


def test_a_model_without_a_logits_layer_is_refused():
    model = tiny_classifier("bert")
    model.classifier = torch.nn.Identity()
    with pytest.raises(StageError, match="no linear layer with 3 outputs"):
        output_layer(model)


def report(**figures: float) -> dict:
    return {"loss": 0.5, "accuracy": 0.5, "f1": 0.5, **figures}


def test_best_selection_keeps_the_best_weights_and_counts_patience():
    model = torch.nn.Linear(2, 2)
    chosen = Selection("best", "accuracy", patience=2)
    chosen.observe(1, report(accuracy=0.6), torch.zeros(1), model, keep_weights=True)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    for step, accuracy in ((2, 0.6), (3, 0.55)):  # a tie is no improvement
        with torch.no_grad():
            model.weight.add_(1.0)
        chosen.observe(step, report(accuracy=accuracy), torch.ones(1), model, True)
        assert chosen.exhausted == (step == 3)
    chosen.restore(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in kept.items())
    assert (chosen.step, chosen.stale, chosen.report["accuracy"]) == (1, 2, 0.6)
    assert torch.equal(chosen.logits, torch.zeros(1))
    assert "best validation accuracy (0.6000)" in chosen.why(3)


def test_loss_is_lower_is_better_and_last_keeps_the_last_step():
    chosen = Selection("last", "loss", patience=0)
    model = torch.nn.Linear(2, 2)
    for step, loss in ((1, 0.4), (2, 0.3), (3, 0.9)):
        chosen.observe(step, report(loss=loss), torch.zeros(1), model, True)
    assert (chosen.step, chosen.best_step, chosen.value, chosen.stale) == (3, 2, 0.3, 1)
    assert chosen.weights is None and not chosen.exhausted  # patience 0: never stops
    restored = Selection("last", "loss", 0)
    restored.load_state_dict(chosen.state_dict())
    assert restored.state_dict() == chosen.state_dict()


def test_the_ece_noise_floor_separates_sampling_luck_from_miscalibration():
    from finetuning.metrics import expected_calibration_error
    from finetuning.reporting.reliability import ece_noise

    rng = np.random.default_rng(1)
    positive = rng.uniform(0.05, 0.95, 800)
    probs = np.stack([1 - positive, positive], axis=1)
    median, p95 = ece_noise(probs, draws=300)
    assert 0.01 < median < p95 < 0.06  # 800 rows: a few hundredths from luck alone
    honest = (rng.random(800) < positive).astype(int)
    assert expected_calibration_error(probs, honest) < p95
    sharpened = np.stack([1 - positive ** 0.3, positive ** 0.3], axis=1)  # overconfident
    assert expected_calibration_error(sharpened, honest) > 2 * p95
    assert ece_noise(probs, draws=300) == (median, p95)  # seeded
