"""The engines a fine-tuned classifier runs on, behind one call: padded token arrays in,
float32 logits out. `torch` runs the HF folder (`models/finetuned`); `onnx` and
`onnx-int8` run the export stage's folder (`models/onnx`) with onnxruntime."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from finetuning.errors import StageError

ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
BACKENDS = ("torch", *ONNX_FILES)
INPUTS = ("input_ids", "attention_mask")  # every export takes these; a pair model token types
# torch, transformers and onnxruntime are imported where a backend loads, so that the
# `finetune` command (its --help, check-params) starts in well under a second.


class Backend(Protocol):
    """A loaded model: `logits` of one padded batch (int64 arrays of shape batch x width)."""

    name: str

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...


class TorchBackend:
    """The HF folder in PyTorch, fp32, inference mode, SDPA attention."""

    name = "torch"

    def __init__(self, folder: str | Path):
        import torch

        from finetuning.data.batching import model_inputs
        from finetuning.inference.model import load_classifier

        self.torch, self.model = torch, load_classifier(folder).eval()
        self.inputs = model_inputs  # the keys a model is given: batching's own list

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        with self.torch.inference_mode():
            inputs = {key: self.torch.from_numpy(value)
                      for key, value in self.inputs(batch).items()}
            return self.model(**inputs).logits.float().numpy()


class OnnxBackend:
    """An exported graph in onnxruntime on the CPU."""

    def __init__(self, path: Path, name: str, threads: int = 0):
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        # The same thread count as torch, so backends compare like for like.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.name = name
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {key: batch[key] for key in self.inputs})[0]


def resolve_backend(folder: str | Path, requested: str = "auto") -> str:
    """The backend for a model folder: `auto` picks torch for a HF folder, onnx for an
    export; an explicit choice the folder cannot serve is refused, saying why."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise StageError(f"{folder} is not a model folder (no config.json); give "
                         "models/finetuned or the export folder models/onnx")
    has_torch = any(folder.glob("*.safetensors"))
    if requested == "auto":
        requested = "torch" if has_torch else "onnx"
    if requested not in BACKENDS:
        raise StageError(f"unknown backend {requested!r}; choose one of {('auto', *BACKENDS)}")
    if requested == "torch" and not has_torch:
        raise StageError(f"{folder} has no PyTorch weights (*.safetensors): it looks like an "
                         "ONNX export; use --backend onnx or onnx-int8")
    if requested in ONNX_FILES and not (folder / ONNX_FILES[requested]).is_file():
        raise StageError(f"{folder} has no {ONNX_FILES[requested]}: --backend {requested} "
                         "needs the export stage's folder (models/onnx)")
    return requested


def load_backend(folder: str | Path, requested: str = "auto", threads: int = 0) -> Backend:
    """Load the model in `folder` on the backend `resolve_backend` chooses."""
    import torch

    name = resolve_backend(folder, requested)
    if threads:
        torch.set_num_threads(threads)
    if name == "torch":
        return TorchBackend(folder)
    return OnnxBackend(Path(folder) / ONNX_FILES[name], name, threads)
