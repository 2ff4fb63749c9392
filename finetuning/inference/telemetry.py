"""What `finetune serve` tells Prometheus (`GET /metrics`, the text format, from the
maintained client library) and its log: requests and their latency per route and status,
the micro-batcher's batch sizes and queue waits, truncated inputs, predictions per
label, and drift of a rolling window of predictions against the validation reference."""
from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from finetuning.inference.predictor import Scored
from finetuning.monitoring.drift import DriftWatch, DriftWindow, Reference

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Telemetry:
    """The service's metrics in their own registry, and the drift window."""

    def __init__(self, labels: list[str], reference: Reference | None, watch: DriftWatch):
        self.registry, self.labels, self.watch = CollectorRegistry(), labels, watch
        metric = {"registry": self.registry}
        self.requests = Counter("finetune_requests", "HTTP requests answered",
                                ["route", "status"], **metric)
        self.latency = Histogram("finetune_request_seconds", "Time to answer a request",
                                 ["route", "status"], buckets=LATENCY_BUCKETS, **metric)
        self.batch_size = Histogram("finetune_batch_size", "Texts per forward pass",
                                    buckets=BATCH_BUCKETS, **metric)
        self.queue_wait = Histogram("finetune_queue_wait_seconds", "Time a request waited "
                                    "for its batch to start", buckets=WAIT_BUCKETS, **metric)
        self.inputs = Counter("finetune_inputs", "Texts predicted", **metric)
        self.truncated = Counter("finetune_inputs_truncated", "Texts cut at max_length",
                                 **metric)
        self.predictions = Counter("finetune_predictions", "Predictions by top label",
                                   ["label"], **metric)
        self.psi = Gauge("finetune_drift_psi", "PSI of the recent window against validation "
                         "(signal: label mix or token length)", ["signal"], **metric)
        self.window = DriftWindow(reference, watch.window, watch.minimum) if reference else None
        self.drift: dict | None = None  # the latest window's figures (for /metadata)
        self.alarmed = False

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route, str(status)).observe(seconds)

    def observe_batch(self, scored: Scored) -> None:
        """Account one forward pass (runs in the model thread, off the event loop)."""
        predicted = scored.logits.argmax(-1)
        self.batch_size.observe(len(predicted))
        self.inputs.inc(len(predicted))
        self.truncated.inc(int(np.sum(scored.truncated)))
        for index, count in zip(*np.unique(predicted, return_counts=True)):
            self.predictions.labels(self.labels[index]).inc(int(count))
        if self.window is not None:
            self.update_drift(self.window.add(predicted, scored.lengths))

    def update_drift(self, figures: dict | None) -> None:
        """Publish the window's drift; warn once when it crosses the threshold."""
        if figures is None:
            return
        self.drift = figures
        self.psi.labels("label").set(figures["label_psi"])
        self.psi.labels("length").set(figures["length_psi"])
        threshold = self.watch.threshold
        worst = max(figures["label_psi"], figures["length_psi"])
        if worst > threshold and not self.alarmed:
            log.warning("drift: the last %d predictions differ from validation (PSI labels "
                        "%.3f, lengths %.3f; threshold %.2f)", figures["window"],
                        figures["label_psi"], figures["length_psi"], threshold)
        elif worst <= threshold and self.alarmed:
            log.info("drift back under %.2f (PSI labels %.3f, lengths %.3f)", threshold,
                     figures["label_psi"], figures["length_psi"])
        self.alarmed = worst > threshold

    def status(self) -> dict:
        """Drift as /metadata shows it: the settings, the latest window's PSI (None until
        the window has `minimum` predictions, or without a reference) and the alarm."""
        return {**asdict(self.watch), "reference": self.window is not None,
                "latest": self.drift, "alarm": self.alarmed}

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
