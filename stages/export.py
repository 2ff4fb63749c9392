"""export: the fine-tuned model as ONNX (fp32 and int8), measured against torch.

Reads `<trained>`, the test split in `<prepared>` and the drift reference in
`<predictions>`; writes `<onnx>` (model.onnx,
model-int8.onnx, tokenizer and config: a folder that stands alone) and
`metrics/export.json`: for torch_fp32, onnx_fp32 and onnx_int8 the test accuracy,
batch-1 latency (p50, p95), batch-32 throughput and size, and for the ONNX graphs the
largest logit difference from torch, all measured in this one run on the same threads.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from finetuning.config import Config
from finetuning.data.prepared import read_prepared
from finetuning.inference.export import export_onnx, quantize_int8
from finetuning.inference.measure import measure_backends
from finetuning.monitoring.drift import copy_reference
from finetuning.outputs import stage_outputs
from finetuning.stage import run_stage

log = logging.getLogger("stages.export")


def export(cfg: Config) -> None:
    """Export, quantize, measure every backend on the test split."""
    paths, ecfg = cfg.paths, cfg.export
    if ecfg.threads:
        torch.set_num_threads(ecfg.threads)
    test = read_prepared(paths.prepared)["test"]
    with stage_outputs() as out:  # the export and its measurements land together
        folder = out.dir(paths.onnx)
        quantize_int8(export_onnx(paths.trained, folder, ecfg.opset), folder)
        copy_reference(Path(paths.predictions), folder)
        results = measure_backends(Path(paths.trained), folder, test["text"].tolist(),
                                   test["label"].to_numpy(), ecfg.latency_runs,
                                   ecfg.warmup_runs, torch.get_num_threads(),
                                   test["text_pair"].tolist() if "text_pair" in test else None)
        out.json(paths.export_metrics, results)
    for name, figures in results.items():
        log.info("%s: %s", name, figures)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (`python -m stages.export`)."""
    run_stage("export", __doc__.splitlines()[0], export, argv)


if __name__ == "__main__":
    main()
