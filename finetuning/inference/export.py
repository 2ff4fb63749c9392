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
from finetuning.inference.backends import INPUTS, ONNX_FILES
from finetuning.inference.model import load_classifier

log = logging.getLogger(__name__)


def graph_inputs(model: torch.nn.Module) -> tuple[str, ...]:
    """input_ids and attention_mask, and token_type_ids where forward() takes them third
    and the model has token types (BERT: sentence pairs then export too; the export passes
    a positional tuple, so the order must be forward()'s)."""
    params = list(inspect.signature(model.forward).parameters)[:3]
    typed = params == [*INPUTS, "token_type_ids"] and \
        getattr(model.config, "type_vocab_size", 0) > 1
    return (*INPUTS, "token_type_ids") if typed else INPUTS


def export_onnx(folder: str | Path, out: Path, opset: int) -> Path:
    """Write `out/model.onnx` (batch and sequence axes dynamic) and the tokenizer and
    config of the HF folder `folder`; return the graph's path."""
    model = load_classifier(folder).eval()
    inputs = graph_inputs(model)
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
    load_tokenizer(folder).save_pretrained(out)
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
