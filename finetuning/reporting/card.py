"""The model card: `README.md` in the model folder, in the Hugging Face layout (YAML
metadata that the Hub reads, then prose and tables a person reads), written from the
run's records so its figures are `metrics/eval.json`'s."""
from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML

from finetuning.config import SCRATCH, Config
from finetuning.monitoring.drift import REFERENCE_FILE
from finetuning.reporting.document import Code, Section, fmt, to_markdown
from finetuning.reporting.pretraining import base_story
from finetuning.reporting.records import Records, flatten_eval
from finetuning.reporting.tables import (data_table, deployment_table, detail_table, key_params,
                                         training_table)

SCORES = ("accuracy", "f1", "precision", "recall", "loss")
MACRO = ("f1", "precision", "recall")
DEFAULT_LICENSE = "other"  # when the base model's own card names none


def base_metadata(base_model: str | Path) -> dict:
    """The YAML front matter of the base model's own card, if it has one."""
    card = Path(base_model) / "README.md"
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    front = text.split("---", 2)[1]
    return YAML(typ="safe").load(front) or {}


def split_results(records: Records, data: str) -> list[dict]:
    """model-index results: one entry per evaluated split, with its scores."""
    ood_sources = {name: entry.get("source", name)
                   for name, entry in records.source.get("ood", {}).items()}
    results = []
    for split, scores in flatten_eval(records.scores).items():
        source = ood_sources.get(split.removeprefix("ood/"), data) if split.startswith(
            "ood/") else data
        metrics = [{"type": name, "value": scores[name],
                    "name": f"{name} (macro)" if name in MACRO else name}
                   for name in SCORES if name in scores]
        results.append({"task": {"type": "text-classification", "name": "Text Classification"},
                        "dataset": {"name": source, "type": source, "split": split},
                        "metrics": metrics})
    return results


def metadata(records: Records, cfg: Config, name: str) -> dict:
    """The card's YAML metadata: language and license of the base, data, metrics."""
    base = base_metadata(cfg.paths.base_model)
    data = records.source.get("data", {}).get("source", cfg.fetch.data)
    # A base built from scratch has no card to say its language: none is claimed for it.
    language = base.get("language", None if cfg.fetch.model == SCRATCH else "en")
    meta = {**({"language": language} if language else {}),
            "license": base.get("license", DEFAULT_LICENSE),
            "library_name": "transformers", "pipeline_tag": "text-classification",
            "tags": ["text-classification", "finetune-pipeline"],
            "datasets": [data], "metrics": ["accuracy", "f1", "precision", "recall"],
            "model-index": [{"name": name, "results": split_results(records, data)}]}
    model = records.source.get("model", {}).get("source", cfg.fetch.model)
    if "/" in model and not model.startswith(("registry:", ".", "/")):
        meta["base_model"] = model  # a Hugging Face id
    return meta


def front_matter(meta: dict) -> str:
    """`---`-fenced YAML."""
    buffer = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(meta, buffer)
    return f"---\n{buffer.getvalue()}---\n"


def limits(records: Records, cfg: Config) -> list[str]:
    """What the model is for, and where it is weaker, from the numbers."""
    test, data = records.scores.get("test", {}), source_of(records, "data", cfg.fetch.data)
    labels = ", ".join(f"`{name}`" for name in cfg.prepare.labels)
    lines = [f"It labels a text as one of {labels}, for texts like its training data "
             f"(`{data}`). Texts are cut at {cfg.tokenize.max_length} tokens.",
             base_story(records.pretrain, cfg)]
    for name, scores in records.scores.get("ood", {}).items():
        drop = 100 * (scores["accuracy"] - test.get("accuracy", 0))
        lines.append(f"On out-of-domain `{name}` texts its accuracy is "
                     f"{scores['accuracy']:.4f} ({drop:+.1f} points against test): check it "
                     "on your own texts before relying on it there.")
    base = records.baseline.get("test", {})
    if test and base:
        lines.append(f"Its scores are softmax probabilities. Test log-loss {test['loss']:.4f} "
                     f"against the TF-IDF baseline's {base['loss']:.4f}, at accuracy "
                     f"{test['accuracy']:.4f} against {base['accuracy']:.4f}"
                     + (": more accurate yet a worse log-loss means confident mistakes, so "
                        "read its scores as a ranking rather than as calibrated probabilities."
                        if overconfident(test, base) else "."))
    fitted = records.train.get("calibration")
    if fitted and "ece" in test:
        lines.append(f"The probabilities are temperature-scaled: T = "
                     f"{fitted['temperature']:.4f}, fitted on the validation split and folded "
                     f"into the classifier's last layer; test expected calibration error "
                     f"{test['ece']:.4f} (15 bins).")
    return lines


def overconfident(model: dict, baseline: dict) -> bool:
    """More accurate than the baseline but worse in log-loss: its mistakes are sure."""
    return model["accuracy"] > baseline["accuracy"] and model["loss"] > baseline["loss"]


def model_name(records: Records, cfg: Config) -> str:
    """A name from the base model and the data: `all-minilm-l6-v2-movieReviewSnippets`."""
    def last(source: str) -> str:
        return Path(source.removeprefix("registry:")).stem or source
    return f"{last(source_of(records, 'model', cfg.fetch.model))}-" \
           f"{last(source_of(records, 'data', cfg.fetch.data))}"


def usage(folder: str) -> list[str]:
    """How to load and serve the folder."""
    code = (f'from transformers import pipeline\nclassify = pipeline("text-classification", '
            f'model="{folder}")\nprint(classify("A moving, beautifully acted film."))')
    return ["With transformers alone:", Code(code, "python"),
            f"With this project: `finetune predict {folder} texts.txt` labels a file, "
            f"`finetune serve {folder}` answers Hugging Face-style requests over HTTP; the "
            "export stage's `models/onnx` holds the same model as ONNX fp32 and int8 "
            "(`--backend onnx-int8`)."]


def source_of(records: Records, what: str, default: str) -> str:
    """The source string fetch resolved for the data or the model."""
    return records.source.get(what, {}).get("source", default)


def card_sections(records: Records, cfg: Config, folder: str, commit: str) -> list[Section]:
    """The card's prose and tables, top to bottom."""
    model, data = source_of(records, "model", cfg.fetch.model), \
        source_of(records, "data", cfg.fetch.data)
    return [
        Section("Model description", [
            f"A text classifier fine-tuned from `{model}` on `{data}` with the "
            f"finetune-pipeline (commit `{commit}`): "
            f"{fmt(records.train.get('num_parameters'))} parameters."]),
        Section("Intended uses and limits", limits(records, cfg)),
        Section("Training data", [
            "Rows per split, label shares and token lengths:",
            data_table(records.prepared, records.tokenized, cfg.prepare.labels)]),
        Section("Training procedure", [training_table(records.train), key_params(cfg)]),
        Section("Evaluation", [
            "Macro precision, recall and F1; loss is the mean cross-entropy. The baseline is "
            "TF-IDF + logistic regression on the same train split.",
            detail_table(records.scores, records.baseline)]),
        Section("Deployment", ["Measured by the export stage on the test split, one run, "
                               "the same threads:", deployment_table(records.export)]),
        Section("How to use", usage(folder)),
        Section("Monitoring", [
            f"`{REFERENCE_FILE}` holds the validation split's predicted-label mix and "
            "token-length distribution; `finetune serve` and `finetune predict` compare "
            "live texts with it (population stability index)."])]


def model_card(records: Records, cfg: Config, folder: str, commit: str) -> str:
    """README.md of the model folder (loaded from `folder`): metadata, then the card."""
    name = model_name(records, cfg)
    title = f"{name}: a {' / '.join(cfg.prepare.labels)} text classifier"
    return front_matter(metadata(records, cfg, name)) + "\n" + to_markdown(
        title, card_sections(records, cfg, folder, commit))
