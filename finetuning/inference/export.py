"""The fine-tuned model as ONNX: an fp32 graph from torch's (TorchScript) exporter, an int8
graph from onnxruntime's dynamic quantization, and the tokenizer and config beside them,
so the folder stands alone (`finetune predict models/onnx ...`)."""
from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

import torch

from finetuning.data.tokenizer import load_tokenizer
from finetuning.data.truncation import Truncation
from finetuning.errors import StageError
from finetuning.inference.backends import INPUTS, ONNX_FILES
from finetuning.inference.model import load_classifier

log = logging.getLogger(__name__)


def graph_inputs(model: torch.nn.Module, pairs: bool) -> tuple[str, ...]:
    """input_ids and attention_mask; for a model trained on sentence pairs token_type_ids
    too, which must be forward()'s third argument (BERT's order: the export passes a
    positional tuple)."""
    if not pairs:
        return INPUTS
    if list(inspect.signature(model.forward).parameters)[:3] != [*INPUTS, "token_type_ids"]:
        raise StageError(f"{type(model).__name__} does not take token_type_ids third, so a "
                         "model of sentence pairs cannot be exported with them")
    return (*INPUTS, "token_type_ids")


def export_onnx(folder: str | Path, out: Path, opset: int) -> Path:
    """Write `out/model.onnx` (batch and sequence axes dynamic) and the tokenizer and
    config of the HF folder `folder`; return the graph's path."""
    model = load_classifier(folder).eval()
    tokenizer = load_tokenizer(folder)
    inputs = graph_inputs(model, Truncation.recorded(tokenizer, None).pairs)
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in inputs)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs} | {"logits": {0: "batch"}}
    target = out / ONNX_FILES["onnx"]
    # The TorchScript exporter: the dynamo one needs onnxscript and maps keyword inputs by
    # name unreliably; a positional tuple in forward()'s order is exact.
    with warnings.catch_warnings():
        # Shape checks that trace to constants, and advanced indexing with no negative
        # indices here: the logit comparison in metrics/export.json is the real check.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # chosen: see above
        torch.onnx.export(model, example, str(target), dynamo=False, opset_version=opset,
                          input_names=list(inputs), output_names=["logits"],
                          dynamic_axes=axes)
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("exported %s (%.1f MB)", target, target.stat().st_size / 2**20)
    return target


def quantize_int8(fp32: Path, out: Path) -> Path:
    """Dynamic int8 quantization of the weights (per tensor: per channel was slower here).
    onnxruntime's `quant_pre_process` is skipped: its shape inference fails on these
    graphs, and quantize_dynamic does not need it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = out / ONNX_FILES["onnx-int8"]
    root = logging.getLogger()  # onnxruntime logs a line per tensor on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    log.info("quantized %s (%.1f MB)", target, target.stat().st_size / 2**20)
    return target
