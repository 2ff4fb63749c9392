"""Figures drawn with matplotlib (Agg: no display): the report's, returned as PNG bytes,
and the confusion matrix TensorBoard shows too.

Each figure draws exactly the series it is given: the curves exported for `dvc plots`
and the confusion counts of the test predictions.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Series = list[tuple[int, float]]
CURVE_PANELS = (("loss", ("train/loss", "eval/loss")),
                ("accuracy", ("train/accuracy", "eval/accuracy")),
                ("learning rate", ("train/learning_rate",)))
DPI = 100


def to_png(fig: plt.Figure) -> bytes:
    """Render and close a figure."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


PRETRAIN_PANELS = (("masked-LM loss", ("pretrain/loss",)),
                   ("masked-token accuracy", ("pretrain/masked_accuracy",)),
                   ("perplexity", ("pretrain/perplexity",)),
                   ("learning rate", ("pretrain/learning_rate",)))


def curves_figure(scalars: dict[str, Series], panels=CURVE_PANELS) -> bytes:
    """One panel per (title, tags) of `panels` (default: loss, accuracy and learning rate
    per optimizer step, train and validation together)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.8))
    for ax, (title, tags) in zip(axes, panels):
        for tag in tags:
            if scalars.get(tag):
                steps, values = zip(*scalars[tag])
                ax.plot(steps, values, marker="o" if tag.startswith("eval") else None,
                        label="validation" if tag.startswith("eval") else tag.split("/")[0])
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    return to_png(fig)


def confusion_figure(counts: np.ndarray, labels: list[str], title: str) -> plt.Figure:
    """Counts[true, predicted] as an annotated heat map (the report's PNG via `to_png`,
    TensorBoard's image via `add_figure`)."""
    size = 2.2 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45 if len(labels) > 3 else 0)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    dark = counts.max() / 2 if counts.size else 0
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > dark else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def pr_roc_figure(pr: list[dict], roc: list[dict], name: str,
                  per_class: dict[str, list[dict]] | None = None) -> bytes:
    """Precision-recall and ROC curves side by side (the points exported for dvc plots);
    `per_class` adds each class's one-vs-rest precision-recall curve."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([p["recall"] for p in pr], [p["precision"] for p in pr], label=name,
              linewidth=2.5 if per_class else 1.5)
    for label, points in (per_class or {}).items():
        left.plot([p["recall"] for p in points], [p["precision"] for p in points],
                  label=label, linewidth=1)
    if per_class:
        left.legend(loc="lower left", fontsize="small")
    left.set(xlabel="recall", ylabel="precision", title=f"precision-recall (test, {name})",
             xlim=(0, 1.01), ylim=(0, 1.01))
    right.plot([p["fpr"] for p in roc], [p["tpr"] for p in roc])
    right.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    right.set(xlabel="false positive rate", ylabel="true positive rate",
              title=f"ROC (test, {name})", xlim=(0, 1.01), ylim=(0, 1.01))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return to_png(fig)
