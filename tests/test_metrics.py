"""Metrics from logits agree with scikit-learn and stay on the device until read."""
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from finetuning.metrics import classification_report
from finetuning.metrics import RunningMetrics, confusion_matrix, scores


def test_scores_match_sklearn_macro():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    cm = confusion_matrix(torch.from_numpy(preds), torch.from_numpy(labels), 3).numpy()
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average="macro",
                                                 zero_division=0)
    got = scores(cm)
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))


def test_never_predicted_class_scores_zero_not_nan():
    got = scores(np.array([[5, 0], [5, 0]]))
    assert got["precision"] == 0.25 and got["accuracy"] == 0.5


def test_running_metrics_accumulate_per_sample_not_per_batch():
    metrics = RunningMetrics(2, torch.device("cpu"))
    # batch 1: 3 rows all right, loss 0.1; batch 2: 1 row wrong, loss 0.9
    metrics.update(torch.tensor(0.1), torch.tensor([[0., 1.]] * 3), torch.tensor([1, 1, 1]))
    metrics.update(torch.tensor(0.9), torch.tensor([[1., 0.]]), torch.tensor([1]))
    out = metrics.compute()
    assert out["accuracy"] == 0.75  # 3 of 4 rows, not the mean of batch accuracies (0.5)
    assert out["loss"] == pytest.approx((0.1 * 3 + 0.9) / 4)
    metrics.reset()
    assert metrics.confusion.sum() == 0


def test_classification_report_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    out = classification_report(logits, np.array([0, 0]), 2)
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])).item()
    assert out["loss"] == pytest.approx(expected) and out["accuracy"] == 0.5


@pytest.mark.parametrize("num_labels, seed", [(2, 0), (3, 1), (5, 2)])
def test_mcc_matches_sklearn(num_labels, seed):
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, 300)
    preds = np.where(rng.random(300) < 0.6, labels, rng.integers(0, num_labels, 300))
    confusion = confusion_matrix(torch.tensor(preds), torch.tensor(labels), num_labels)
    assert scores(confusion.numpy())["mcc"] == pytest.approx(matthews_corrcoef(labels, preds))
    one_class = confusion_matrix(torch.zeros(10), torch.tensor([0, 1] * 5), 2).numpy()
    assert scores(one_class)["mcc"] == 0.0  # undefined: sklearn's 0 too


def test_ece_of_calibrated_overconfident_and_hand_computed_predictions():
    from finetuning.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    correct = rng.random(200_000) < confidence  # right exactly as often as it claims
    probs = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.where(correct, 0, 1)
    assert expected_calibration_error(probs, labels) < 0.005
    always_sure = np.stack([np.full(100, 0.99), np.full(100, 0.01)], axis=1)
    half_right = np.array([0, 1] * 50)
    assert expected_calibration_error(always_sure, half_right) == pytest.approx(0.49)
    # Two bins: 0.6 (2 rows, 1 right) and 0.9 (2 rows, 2 right): (2|0.5-0.6| + 2|1-0.9|)/4
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(probs, np.array([0, 1, 0, 0])) == pytest.approx(0.1)


def test_classification_report_has_mcc_and_ece():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    report = classification_report(logits, np.array([0, 1, 1]), 2)
    assert set(report) == {"loss", "accuracy", "precision", "recall", "f1", "mcc", "ece",
                           "count"}
    assert report["mcc"] == pytest.approx(0.5) and 0 < report["ece"] < 1
