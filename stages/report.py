"""report: a readable summary of the run: metrics per split and the training curves,
read back from the tensorboardX event files with tensorboard's own reader."""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402

from stages.cli import run_stage  # noqa: E402
from stages.config import Config  # noqa: E402
from stages.outputs import atomic_dir, read_json  # noqa: E402
from stages.tblog import read_scalars  # noqa: E402

log = logging.getLogger(__name__)

CURVES = (("loss", ("train/loss", "eval/loss")), ("accuracy", ("train/accuracy", "eval/accuracy")))
COLUMNS = ("accuracy", "precision", "recall", "f1", "loss")


def flatten_eval(metrics: dict) -> dict[str, dict]:
    """eval.json's nesting as flat rows: validation, test, ood/<set>."""
    rows = {name: scores for name, scores in metrics.items() if name != "ood"}
    rows.update({f"ood/{name}": scores for name, scores in metrics.get("ood", {}).items()})
    return rows


def metrics_table(metrics: dict) -> str:
    """A Markdown table: one row per split, one column per score."""
    lines = ["| split | " + " | ".join(COLUMNS) + " | rows |",
             "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for name, scores in flatten_eval(metrics).items():
        cells = " | ".join(f"{scores[c]:.4f}" for c in COLUMNS)
        lines.append(f"| {name} | {cells} | {scores.get('count', '')} |")
    return "\n".join(lines)


def plot_curves(scalars: dict[str, list[tuple[int, float]]], target: Path) -> None:
    """Loss and accuracy per step, train and eval on the same axes."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(11, 4))
    for ax, (title, tags) in zip(axes, CURVES):
        for tag in tags:
            if tag in scalars:
                steps, values = zip(*scalars[tag])
                ax.plot(steps, values, marker="o" if tag.startswith("eval") else None,
                        label=tag)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def render_markdown(metrics: dict, train: dict) -> str:
    """The report's text; images are referenced relative to the report."""
    return "\n".join([
        "# Fine-tuning report", "",
        f"{train.get('steps')} optimizer steps over {train.get('epochs')} epoch(s) in "
        f"{train.get('wall_seconds')} s ({train.get('samples_per_second')} samples/s, "
        f"{train.get('tokens_per_second')} tokens/s) on {train.get('device')} "
        f"x{train.get('world_size')}, {train.get('precision')}.", "",
        "## Metrics", "", metrics_table(metrics), "",
        "## Training curves", "", "![training curves](curves.png)", ""])


def report(cfg: Config) -> None:
    """Stage body: read metrics and event files, write the report folder."""
    paths = cfg.paths
    metrics, train = read_json(paths.eval_metrics), read_json(paths.train_metrics)
    scalars = read_scalars(paths.tensorboard)
    with atomic_dir(paths.reports) as out:
        plot_curves(scalars, out / "curves.png")
        (out / "report.md").write_text(render_markdown(metrics, train), encoding="utf-8")
    log.info("wrote %s/report.md", paths.reports)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.report`)."""
    run_stage("report", __doc__.splitlines()[0], report, argv)


if __name__ == "__main__":
    main()
