"""`finetune predict` on every input format, on standard input, to JSON Lines and to
tables, on every backend, and its refusals: the message names the file and row, the exit
status is 1, and no output file is left behind."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from finetuning.cli import main
from finetuning.inference.predictor import Predictor

TEXTS = ["the movie was great", "awful plot, bad acting", "", "lovely ending"]


@pytest.fixture(scope="module")
def model(pipeline_run):
    return pipeline_run[1].paths.finetuned


@pytest.fixture(scope="module")
def expected(model):
    return Predictor(model).predict(TEXTS)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def write_input(folder, suffix: str):
    frame = pd.DataFrame({"id": range(len(TEXTS)), "review": TEXTS})
    path = folder / f"in{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_input_format_gives_one_line_per_row_in_order(model, expected, tmp_path, suffix,
                                                            capsys):
    path = write_input(tmp_path, suffix)
    column = [] if suffix == ".txt" else ["--text-column", "review"]
    assert main(["predict", model, str(path), *column]) == 0
    rows = jsonl(capsys.readouterr().out)
    assert [r["text"] for r in rows] == TEXTS
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected])
    for row in rows:
        assert row["score"] == max(row["scores"].values())
        assert sum(row["scores"].values()) == pytest.approx(1.0)


def test_csv_output_keeps_the_input_columns(model, expected, tmp_path):
    out = tmp_path / "out.csv"
    assert main(["predict", model, str(write_input(tmp_path, ".parquet")), "--text-column",
                 "review", "-o", str(out), "--batch-size", "2"]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns) == ["id", "review", "label", "score"]
    assert frame["id"].tolist() == list(range(len(TEXTS)))
    assert frame["label"].tolist() == [e["label"] for e in expected]


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_the_export_folder_predicts_like_torch(pipeline_run, expected, tmp_path, backend):
    out = tmp_path / "out.jsonl"
    assert main(["predict", pipeline_run[1].paths.onnx, str(write_input(tmp_path, ".txt")),
                 "--backend", backend, "-o", str(out)]) == 0
    rows = jsonl(out.read_text())
    tolerance = 1e-4 if backend == "onnx" else 0.05
    assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected],
                                                       abs=tolerance)


BAD = {
    "missing column": (b"review,id\nok,1\n", ".csv", "missing column(s) ['text'] "
                       "(--text-column); the file has columns ['review', 'id']"),
    "not utf-8": (b"fine\ncaf\xe9\n", ".txt", "line 2 is not valid UTF-8"),
    "not text": (b'{"text": 5}\n', ".jsonl", "row 1, column 'text' holds int 5"),
    "unknown type": (b"x", ".docx", "unsupported input type '.docx'"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_with_no_output(model, tmp_path, capsys, case):
    content, suffix, message = BAD[case]
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    out = tmp_path / "out.csv"
    out.write_text("previous good output\n")
    assert main(["predict", model, str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err
    assert out.read_text() == "previous good output\n"
    assert not list(tmp_path.glob(".out.csv.tmp*"))


def test_a_single_text_model_refuses_pairs(model, tmp_path, capsys):
    pd.DataFrame({"text": ["good"], "hypothesis": ["it was good"]}).to_csv(
        tmp_path / "pairs.csv", index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", model, str(tmp_path / "pairs.csv"), "--text-pair-column",
                 "hypothesis", "-o", str(out)]) == 1
    assert "was trained on single texts: it takes no text_pair" in capsys.readouterr().err
    assert not out.exists()


def test_missing_input_and_wrong_model(model, tmp_path, capsys):
    assert main(["predict", model, str(tmp_path / "nope.txt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(write_input(tmp_path, ".txt"))]) == 1
    assert "is not a model folder (no config.json)" in capsys.readouterr().err


def test_finetune_help_lists_its_commands():
    result = subprocess.run([f"{sys.prefix}/bin/finetune", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for command in ("predict", "serve", "check-params"):
        assert command in result.stdout


def test_a_labelled_table_keeps_its_labels(model, expected, tmp_path):
    source = tmp_path / "labelled.csv"
    pd.DataFrame({"text": TEXTS, "label": ["positive"] * len(TEXTS)}).to_csv(source,
                                                                               index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", model, str(source), "-o", str(out)]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns) == ["text", "label", "predicted_label", "predicted_score"]
    assert frame["label"].tolist() == ["positive"] * len(TEXTS)
    assert frame["predicted_label"].tolist() == [e["label"] for e in expected]


def test_the_readme_predict_commands_work_as_written(pipeline_run, tmp_path):
    """The predict blocks of the README's "Predict, serve and export" (the first, and the
    batch summary's), in a checkout-like folder holding the session's model, export and
    prepared data."""
    _, cfg = pipeline_run
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Predict, serve and export\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    (summary_block,) = [b for b in blocks if "--summary" in b]
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "finetuned").symlink_to(cfg.paths.finetuned)
    (tmp_path / "models" / "onnx").symlink_to(cfg.paths.onnx)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(cfg.paths.prepared)
    for block in (blocks[0], summary_block):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        if block is blocks[0]:
            assert len(jsonl(result.stdout)) == 4  # two texts, twice
    labelled = pd.read_csv(tmp_path / "test-labelled.csv")
    assert len(labelled) == 6 and "predicted_label" in labelled.columns
    summary = json.loads((tmp_path / "predict-summary.json").read_text())
    assert summary["texts"] == 6 and sum(summary["labels"].values()) == 6
    assert set(summary["drift"]) == {"label_psi", "length_psi"}
