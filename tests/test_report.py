"""The report stage: plot data exported from the event files, report.md / report.html built
from the same numbers, and `dvc plots show` / `dvc plots diff` pages that render offline."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image as PILImage
from sklearn.metrics import (average_precision_score, precision_recall_curve, roc_auc_score,
                             roc_curve)
from tensorboardX import SummaryWriter

from finetuning.config import Config, config_from_dict
from finetuning.monitoring.events import read_scalars
from finetuning.provenance import git_state
from finetuning.reporting.document import Section, Table, to_html, to_markdown
from finetuning.reporting.plots import curve_areas, positive_scores, read_series
from tests.conftest import BIN, ROOT, paths_under, repo_params, run, run_stage_main, write_params
from tests.imports import local_imports

SCRIPTS = ROOT / "scripts"
CHROMIUM = Path("/usr/bin/chromium")
# Under CI (CI=true, which .ci/run sets after installing Chromium) a missing browser is a
# failure, not a skip: the render checks must run where it counts.
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists() and os.environ.get("CI") != "true",
                                    reason="/usr/bin/chromium is absent: cannot render pages "
                                           "(apt-get install -y chromium)")
# Known curves; values that float32 cannot hold exactly, as event files store float32.
CURVES = {"train/loss": [(2, 0.912345678), (4, 0.7), (6, 0.55)],
          "train/accuracy": [(2, 0.5), (4, 0.625), (6, 0.8125)],
          "train/learning_rate": [(2, 1e-4), (4, 5e-5), (6, 0.0)],
          "eval/loss": [(3, 0.81), (6, 0.6)],
          "eval/accuracy": [(3, 0.66666667), (6, 0.83333333)]}
PREDICTIONS = pd.DataFrame({
    "text": ["a | pipe <b>great</b>", "awful", "great", "bad", "nice", "meh"],
    "label": ["positive", "negative", "positive", "negative", "positive", "negative"],
    "predicted": ["negative", "negative", "positive", "positive", "positive", "positive"],
    "confidence": [0.9, 0.8, 0.7, 0.6, 0.95, 0.55]})
PREDICTIONS["prob_positive"] = np.where(PREDICTIONS["predicted"] == "positive",
                                        PREDICTIONS["confidence"], 1 - PREDICTIONS["confidence"])
PREDICTIONS["prob_negative"] = 1 - PREDICTIONS["prob_positive"]
EXPORT = {"torch_fp32": {"accuracy": 0.8333, "latency_ms_b1": 20.0, "latency_ms_b1_p95": 25.0,
                         "samples_per_second_b32": 50.0, "size_mb": 86.7},
          "onnx_fp32": {"accuracy": 0.8333, "latency_ms_b1": 12.5, "latency_ms_b1_p95": 14.0,
                        "samples_per_second_b32": 60.0, "size_mb": 86.8,
                        "max_abs_logit_diff": 4e-07},
          "onnx_int8": {"accuracy": 0.8, "latency_ms_b1": 8.0, "latency_ms_b1_p95": 9.5,
                        "samples_per_second_b32": 100.0, "size_mb": 21.9,
                        "max_abs_logit_diff": 0.0312}}
SCORES = {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "loss": 0.7, "count": 6}


def float32(value: float) -> float:
    """What an event file gives back for `value`."""
    return float(np.float32(value))


def load_module(name: str):
    """Import a script from scripts/ (not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def write_events(logdir: Path, curves: dict[str, list[tuple[int, float]]]) -> None:
    """An event file holding `curves`, written the way the train stage writes them."""
    writer = SummaryWriter(str(logdir))
    for tag, series in curves.items():
        for step, value in series:
            writer.add_scalar(tag, value, step)
    writer.close()


def write_inputs(root: Path) -> Config:
    """Every file the report reads, with known contents, and a config pointing at them."""
    params = {**repo_params(), "paths": paths_under(root), "report": {"mistakes": 2}}
    write_params(params, root / "params.yaml")
    cfg = config_from_dict(params)
    paths = cfg.paths
    files = {
        paths.source_record: {"data": {"source": "reviews.csv"},
                                               "model": {"source": "tiny-bert"}, "ood": {}},
        paths.pretrain_metrics: {"steps": 0},  # the fetched base passed through
        paths.prepare_metrics: {"rows": {"train": 40, "test": 6},
                                "labels": {"train": {"negative": 30, "positive": 10},
                                           "test": {"negative": 3, "positive": 3}}},
        paths.tokenize_metrics: {s: {"rows": n, "mean_length": 7.25, "p50_length": 7,
                                     "p95_length": 12, "max_length": 16, "truncated": 2,
                                     "truncated_fraction": 0.05}
                                 for s, n in (("train", 40), ("test", 6))},
        paths.train_metrics: {"steps": 6, "epochs": 2, "train_seconds": 12.5,
                              "stopped_early": False, "selected_step": 3,
                              "calibration": {"temperature": 1.75, "ece_before": 0.125,
                                              "ece_after": 0.03125, "loss_before": 0.5,
                                              "loss_after": 0.375}},
        paths.train_run: {"num_parameters": 1234567, "device": "cpu", "world_size": 1,
                          "selected_by": "the best validation accuracy (0.8333)"},
        paths.eval_metrics: {"test": {**SCORES, "accuracy": 0.8333, "ece": 0.2125},
                             "ood": {"other": SCORES}},
        paths.eval_classes: {"test": {"negative": {"precision": 0.75, "recall": 1.0,
                                                   "f1": 0.8571, "support": 3},
                                      "positive": {"precision": 1.0, "recall": 0.6667,
                                                   "f1": 0.8, "support": 3}}, "ood": {}},
        paths.baseline_metrics: {"test": {**SCORES, "accuracy": 0.6667},
                                 "ood": {"other": {**SCORES, "loss": 0.75}}},
        paths.export_metrics: EXPORT,
    }
    for path, data in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data))
    Path(paths.predictions).mkdir()
    PREDICTIONS.to_csv(Path(paths.predictions) / "test.csv", index=False)
    write_events(Path(paths.tensorboard), CURVES)
    return cfg


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Config:
    """The report stage run once on known inputs."""
    root = tmp_path_factory.mktemp("report")
    cfg = write_inputs(root)
    run_stage_main("report", root / "params.yaml")
    return cfg


def report_text(cfg: Config, name: str = "report.md") -> str:
    return (Path(cfg.paths.reports) / name).read_text(encoding="utf-8")


def test_exported_curves_equal_the_event_files(made):
    plots = Path(made.paths.plots)
    for tag, series in CURVES.items():
        exported = read_series(plots / (tag.replace("/", "_") + ".tsv"))
        assert exported == [(step, float32(value)) for step, value in series], tag
    assert read_scalars(made.paths.tensorboard) == {
        tag: read_series(plots / (tag.replace("/", "_") + ".tsv")) for tag in CURVES}


def test_report_curve_numbers_are_the_event_values(made):
    text = report_text(made)
    loss = [float32(v) for _, v in CURVES["train/loss"]]
    assert (f"| train/loss | 3 | 2–6 | {loss[0]:.6g} | {loss[-1]:.6g} | {min(loss):.6g} | "
            f"{max(loss):.6g} |") in text
    assert "| eval/accuracy | 2 | 3–6 | 0.666667 | 0.833333 | 0.666667 | 0.833333 |" in text
    assert "| train/learning_rate | 3 | 2–6 | 0.0001 | 0 | 0 | 0.0001 |" in text


def test_report_compares_with_the_baseline(made):
    text = report_text(made)
    assert "| test | 6 | 0.8333 | 0.6667 | +0.1666 |" in text
    assert "| ood/other | 6 | 0.5000 | 0.5000 | +0.0000 |" in text
    assert "0.7000 | 0.7500 | -0.0500 |" in text  # loss on ood/other
    assert "fine-tuned model is ahead of the baseline: accuracy 0.8333 vs 0.6667" in text


def test_report_describes_the_run(made):
    text = report_text(made)
    assert "`tiny-bert` (1,234,567 parameters) fine-tuned on `reviews.csv` (40 training rows)"\
        in text
    assert "6 optimizer steps over 2 epoch(s) in 12.5 s" in text
    assert "| train | 40 | 75.0 | 25.0 | 7.2 | 7 | 12 | 16 | 2 | 5.00 |" in text
    assert "| train.learning_rate | 0.0001 |" in text and "| baseline.c | 4.0 |" in text
    assert "| CPU cores |" in text and "| torch |" in text


def test_report_shows_the_kept_step_calibration_and_classes(made):
    text = report_text(made)
    assert "| weights kept | step 3: the best validation accuracy (0.8333) |" in text
    assert "| temperature | 1.75 |" in text
    assert ("Temperature 1.7500, fitted on the validation split and folded into the "
            "classifier's last layer") in text
    assert "validation ECE 0.1250 → 0.0312, log-loss 0.5000 → 0.3750" in text
    assert "| test | negative | 0.7500 | 1.0000 | 0.8571 | 3 |" in text
    assert "| test | positive | 1.0000 | 0.6667 | 0.8000 | 3 |" in text
    assert "Test split (`metrics/eval.json`): ECE 0.2125; a perfectly calibrated model " \
           "would still show" in text  # scored once, by evaluate
    assert re.search(r"show 0\.\d{4} on 6 rows from sampling alone \(95th percentile "
                     r"0\.\d{4};", text)
    reliability = PILImage.open(Path(made.paths.reports) / "reliability.png")
    assert reliability.size == (500, 550) and "![reliability diagram](reliability.png)" in text


def test_most_confident_mistakes_in_order(made):
    text = report_text(made)
    assert "| 1 | a \\| pipe <b>great</b> | positive | negative | 0.9000 |" in text
    assert "| 2 | bad | negative | positive | 0.6000 |" in text
    assert "| meh |" not in text  # report.mistakes = 2; the third mistake (0.55) is left out
    assert "The 2 most confident mistakes" in text


def test_deployment_section_compares_backends_with_torch(made):
    text = report_text(made)
    assert "## Deployment" in text
    assert "| PyTorch fp32 | 0.8333 | 20.00 | 25.00 | 1.00x | 50.0 | 1.00x | 86.7 | — |" in text
    assert "| ONNX fp32 | 0.8333 | 12.50 | 14.00 | 1.60x | 60.0 | 1.20x | 86.8 | 4e-07 |" in text
    assert "| ONNX int8 (dynamic) | 0.8000 | 8.00 | 9.50 | 2.50x | 100.0 | 2.00x | 21.9 |" in text


def test_summary_file_holds_the_summary_and_metrics_sections_only(made):
    """What the Prefect flow shows as a run's artifact: the same text as the report's."""
    summary = report_text(made, "summary.md")
    assert summary.startswith("## Summary\n")
    assert "## Metrics: fine-tuned model vs baseline" in summary
    assert "| test | fine-tuned | 0.8333 |" in summary and "| test | baseline | 0.6667 |" in summary
    assert "## Training curves" not in summary
    assert summary.strip() in report_text(made)


def test_html_is_self_contained_small_and_escaped(made):
    page = report_text(made, "report.html")
    assert len(page.encode()) < 5 * 2**20
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "a | pipe &lt;b&gt;great&lt;/b&gt;" in page and "<b>great</b>" not in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # reliability, curves, confusion matrix, precision-recall + ROC
    for data in images:
        with PILImage.open(io.BytesIO(base64.b64decode(data))) as image:
            assert image.format == "PNG" and image.width >= 400
    assert (Path(made.paths.reports) / "curves.png").stat().st_size > 1000


def test_confusion_and_curve_points_match_the_predictions(made):
    plots = Path(made.paths.plots)
    confusion = pd.read_csv(plots / "confusion.csv")
    assert confusion.values.tolist() == PREDICTIONS[["label", "predicted"]].values.tolist()
    assert list(confusion.columns) == ["actual", "predicted"]
    truth = PREDICTIONS["label"] == "positive"
    precision, recall, _ = precision_recall_curve(truth, PREDICTIONS["prob_positive"])
    pr = json.loads((plots / "pr.json").read_text())
    assert [p["precision"] for p in pr] == pytest.approx(precision.tolist())
    assert [p["recall"] for p in pr] == pytest.approx(recall.tolist())
    fpr, tpr, _ = roc_curve(truth, PREDICTIONS["prob_positive"])
    roc = json.loads((plots / "roc.json").read_text())
    assert [p["fpr"] for p in roc] == pytest.approx(fpr.tolist())
    assert [p["tpr"] for p in roc] == pytest.approx(tpr.tolist())
    assert roc[0]["threshold"] is None  # sklearn's +inf, which JSON cannot hold
    ap = average_precision_score(truth, PREDICTIONS["prob_positive"])
    auc = roc_auc_score(truth, PREDICTIONS["prob_positive"])
    assert f"average precision {ap:.4f}, ROC AUC {auc:.4f}" in report_text(made)


def test_more_than_two_classes_pool_one_vs_rest():
    labels = ["a", "b", "c"]
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    frame = pd.DataFrame({"label": ["a", "b", "c", "b"],
                          **{f"prob_{n}": probs[:, i] for i, n in enumerate(labels)}})
    truth, score, name = positive_scores(frame, labels)
    assert name == "micro average over classes" and len(truth) == 12
    onehot = np.eye(3)[[0, 1, 2, 1]]
    ap, auc = curve_areas(truth, score)
    assert ap == pytest.approx(average_precision_score(onehot, probs, average="micro"))
    assert auc == pytest.approx(roc_auc_score(onehot, probs, average="micro"))


def test_git_state_marks_dirty_but_not_for_pipeline_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert git_state([]) == "unknown"
    run(["git", "init", "-q"], tmp_path)
    for name in ("code.py", "dvc.lock"):
        (tmp_path / name).write_text("1\n")
    run(["git", "add", "-A"], tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], tmp_path)
    head = run(["git", "rev-parse", "--short", "HEAD"], tmp_path).stdout.strip()
    (tmp_path / "dvc.lock").write_text("2\n")
    assert git_state(["dvc.lock"]) == head
    (tmp_path / "code.py").write_text("2\n")
    assert git_state(["dvc.lock"]) == f"{head} (dirty: uncommitted changes)"


def test_markdown_and_html_render_the_same_table():
    sections = [Section("S", ["see `x` and **y**", Table(["name", "n"], [["a|b", "1,056"]])])]
    assert "| a\\|b | 1,056 |" in to_markdown("T", sections)
    assert "|---|---:|" in to_markdown("T", sections)
    page = to_html("T", sections)
    assert "<td>a|b</td><td class=n>1,056</td>" in page
    assert "see <code>x</code> and <b>y</b>" in page


@pytest.mark.parametrize("stage", list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]))
def test_dvc_deps_list_every_imported_code_file(stage):
    """A stage reruns when any code it runs changes: no more, no less."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    assert spec["cmd"] == f"python -m stages.{stage}"
    code = {d for d in spec["deps"] if d.endswith(".py")}
    assert code == local_imports(f"stages.{stage}"), sorted(local_imports(f"stages.{stage}"))


@needs_chromium
def test_report_renders_offline_with_its_pictures(made, tmp_path):
    check = load_module("check_render")
    seen = check.render(Path(made.paths.reports) / "report.html", tmp_path / "report.png")
    assert seen.ok, (seen.non_white, seen.coloured)


def plot_rows(output: dict, plot: str) -> list[dict]:
    """The data rows of one plot in `dvc plots show/diff --json` output."""
    return [row for entry in output["data"][plot] for row in entry["content"]["data"]["values"]]


def readme_blocks(section: str) -> list[str]:
    """The bash blocks of one README section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", body, re.DOTALL)


def run_block(repo: Path, script: str) -> str:
    """Run README lines as a user would, in a shell whose PATH lacks the venv."""
    if not CHROMIUM.exists() and os.environ.get("CI") != "true":
        script = "\n".join(line for line in script.splitlines() if "check_render" not in line)
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p) != BIN]
    env = {**os.environ, "PATH": os.pathsep.join(path), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=repo,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_readme_commands_work_and_plots_diff_shows_both_runs(reproduced_repo, tmp_path):
    """The README section's commands, as written, on the tiny repo: two committed runs
    (different learning rates) give a `dvc plots diff HEAD~1` page with both runs' curves
    that renders offline; two queued experiments run side by side and compare (the Sweeps
    section)."""
    tiny_repo = reproduced_repo
    (tiny_repo / ".venv").symlink_to(BIN.parent)
    shutil.copytree(ROOT / "scripts", tiny_repo / "scripts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(tiny_repo / ".git" / "info" / "exclude", "a") as exclude:
        exclude.write(".venv\n")
    show, commits = readme_blocks("Read the report and compare runs")
    sweep, _ = readme_blocks("Sweeps")  # the second, a Prefect sweep: tests/test_flow.py
    run_block(tiny_repo, show)
    tracked = [*(tiny_repo / "plots").iterdir(), tiny_repo / "metrics" / "baseline.json"]
    before = {path: path.read_bytes() for path in tracked}
    for stage in ("baseline", "report"):
        run(["python", "-m", f"stages.{stage}"], tiny_repo)
    assert {path: path.read_bytes() for path in tracked} == before  # git sees no change

    out = run_block(tiny_repo, commits)
    assert "train.learning_rate" in out and "metrics/eval.json" in out
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], tiny_repo).stdout)
    # (not test.loss: the tiny run stays at chance, and a calibration temperature at its
    # bound makes both test losses ln 2 exactly)
    loss = diff["metrics/train.json"]["final_train_loss"]
    assert loss["old"] != loss["new"] and loss["diff"] == loss["new"] - loss["old"]
    params = json.loads(run(["dvc", "params", "diff", "HEAD~1", "--json"], tiny_repo).stdout)
    lr = params["params.yaml"]["train.learning_rate"]
    assert (lr["old"], lr["new"]) == (1e-3, 2e-4)
    assert run(["git", "ls-files", "plots"], tiny_repo).stdout.count("\n") >= 8
    diff = json.loads(run(["dvc", "plots", "diff", "HEAD~1", "--json"], tiny_repo).stdout)
    rows = plot_rows(diff, "loss")
    curves = {(rev, name): [float(r["value"]) for r in rows
                            if r["rev"] == rev and r["filename"] == name]
              for rev in ("HEAD~1", "workspace") for name in ("train_loss.tsv", "eval_loss.tsv")}
    assert all(curves.values()), {k: len(v) for k, v in curves.items()}
    assert curves["HEAD~1", "train_loss.tsv"] != curves["workspace", "train_loss.tsv"]
    assert curves["workspace", "train_loss.tsv"] == [
        v for _, v in read_series(tiny_repo / "plots" / "train_loss.tsv")]
    assert {r["rev"] for r in plot_rows(diff, "confusion")} == {"HEAD~1", "workspace"}
    if CHROMIUM.exists():
        page = tiny_repo / "dvc_plots" / "index.html"  # the README's `dvc plots diff HEAD~1`
        assert "<script src" not in page.read_text()  # no CDN: the offline template
        seen = load_module("check_render").render(page, tmp_path / "diff.png")
        assert seen.ok, (seen.non_white, seen.coloured)

    try:
        out = run_block(tiny_repo, sweep)  # two queued experiments, two workers
        status = run(["dvc", "queue", "status"], tiny_repo).stdout
        grid = run(["dvc", "exp", "run", "--queue", "-S", "train.learning_rate=1e-4,3e-4",
                    "-S", "train.epochs=2,3"], tiny_repo).stdout
    finally:
        run(["dvc", "queue", "stop"], tiny_repo, check=False)
    assert "lr-3e-4" in out and "lr-5e-4" in out
    assert status.count("Success") == 2 and "Failed" not in status
    assert grid.count("Queued experiment") == 4  # one per combination
    run(["dvc", "queue", "remove", "--queued"], tiny_repo)
    exps = json.loads(run(["dvc", "plots", "diff", "lr-3e-4", "lr-5e-4", "--json"],
                          tiny_repo).stdout)
    assert {r["rev"] for r in plot_rows(exps, "loss")} == {"lr-3e-4", "lr-5e-4"}
    applied = yaml.safe_load((tiny_repo / "params.yaml").read_text())  # `dvc exp apply`
    assert applied["train"]["learning_rate"] == 3e-4
