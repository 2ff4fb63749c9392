"""Reporting: run.py loads a finished run, sections.py builds the report from it out of
document.py's blocks, figures.py draws, mistakes.py lists confident errors, plots.py
exports series for `dvc plots`, report.py writes the files."""
