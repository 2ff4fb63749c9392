"""report: what ran, how training went and how the model compares with the baseline.

Reads every stage's metrics, `<raw_data>/source.json`, the test predictions and the event
files in `<tensorboard>` (with tensorboard's own reader); writes `reports/report.md`,
a self-contained `reports/report.html` and `reports/summary.md`, and the series behind
the figures under `plots/` for `dvc plots`.
"""
from __future__ import annotations

import logging

from finetuning.config import Config
from finetuning.outputs import stage_outputs
from finetuning.reporting.plots import curves_of, export_plots
from finetuning.reporting.records import run_commit
from finetuning.reporting.report import write_report
from finetuning.reporting.run import load_run
from finetuning.reporting.sections import build_sections
from finetuning.stage import run_stage

log = logging.getLogger("stages.report")


def report(cfg: Config) -> None:
    """Read the run, export plot data, write the report folder."""
    paths = cfg.paths
    run = load_run(paths)
    curves = curves_of(run.predictions, cfg.prepare.labels)
    sections = build_sections(run, cfg, run_commit(paths), curves)
    with stage_outputs() as out:
        export_plots(run.scalars, run.predictions, curves, out.dir(paths.plots))
        size = write_report(sections, out.dir(paths.reports))
    log.info("wrote %s/report.html (%.0f kB) and report.md; plot data in %s", paths.reports,
             size / 1024, paths.plots)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.report`)."""
    run_stage("report", __doc__.splitlines()[0], report, argv)


if __name__ == "__main__":
    main()
