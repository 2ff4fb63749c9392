"""Entry points of the DVC stages, one module each: `python -m stages.<name>` (dvc.yaml)."""
