"""Shared fixtures: a tiny BERT built from a config, a tiny labelled data set, and a
throw-away copy of the repository configured to use them (no network anywhere)."""
from __future__ import annotations

import contextlib
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

POSITIVE = ["good", "great", "excellent", "wonderful", "lovely", "superb", "brilliant"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful", "poor", "horrible"]
FILLER = ["the", "movie", "film", "was", "plot", "acting", "really", "quite", "and", "a",
          "story", "very", "ending", "cast"]


def make_sentences(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` short synthetic reviews, half positive, half negative, all distinct."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = len(rows) % 2
        words = rng.sample(FILLER, rng.randint(2, 8))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": "positive" if label else "negative"})
    return pd.DataFrame(rows)


def build_tiny_model(folder: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A random small BERT with a WordPiece vocab of the synthetic words, saved as an HF
    folder (safetensors + fast tokenizer). Seeded: the same weights in every session,
    whichever tests ran before (a frozen random base decides how well LoRA can do)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POSITIVE + NEGATIVE + FILLER
             + letters + [f"##{c}" for c in letters] + list(".,!?'"))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(folder)  # vocab_file= would mis-load in v5
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=hidden * 2,
                        max_position_embeddings=128)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def shared(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test session, also when the session runs on several
    xdist workers: the first to get the lock builds it under the session's common temp
    folder, the others wait and use it. Tests treat it as read-only (copy to change)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # popen-gw<N>'s parent: this session's, shared by its workers
    folder = base / f"shared-{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of a tiny pretrained-like BERT folder."""
    return shared(tmp_path_factory, "tiny-model", build_tiny_model)


def write_tiny_data(folder: Path) -> None:
    make_sentences(60, seed=1).to_csv(folder / "reviews.csv", index=False)
    make_sentences(20, seed=2).to_json(folder / "ood.jsonl", orient="records", lines=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A folder with a 60-row CSV of synthetic reviews and a 20-row OOD JSONL."""
    return shared(tmp_path_factory, "tiny-data", write_tiny_data)


def repo_params() -> dict:
    """The repository's params.yaml."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def paths_under(root: Path) -> dict[str, str]:
    """The repository's `paths:`, moved under `root`."""
    return {key: str(root / value) for key, value in repo_params()["paths"].items()}


def tiny_params(model: Path, data: Path) -> dict:
    """params.yaml of the repo, pointed at the tiny model and data, with short training."""
    params = repo_params()
    params["fetch"].update(data=str(data / "reviews.csv"), model=str(model),
                           ood={"synthetic": str(data / "ood.jsonl")})
    params["tokenize"]["max_length"] = 16
    params["train"].update(epochs=2, batch_size=8, learning_rate=1e-3, threads=1, warmup=0.1,
                           checkpoint_every=4)
    params["tensorboard"].update(log_every=2, histogram_every=3, embeddings=8, mistakes=5)
    params["evaluate"]["batch_size"] = 16
    params["export"].update(latency_runs=5, warmup_runs=1)
    return params


def write_params(params: dict, path: Path) -> Path:
    """Write a params file; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_stage_main(stage: str, params_file: Path) -> None:
    """`python -m stages.<stage> --params <file>`, in this process: the stage's real entry
    point (runpy runs it as __main__), without a new interpreter's import time. A stage
    that fails exits, which fails the test with its message in the captured log."""
    argv = sys.argv
    sys.argv = [f"stages.{stage}", "--params", str(params_file)]
    try:
        runpy.run_module(f"stages.{stage}", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv


REPO_FILES = ["finetuning", "stages", "flows", "presets", "dvc.yaml", "params.yaml",
              "pyproject.toml", ".dvc/config", ".dvcignore", ".gitignore", "dvc_plots"]


def run(cmd: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command with the venv's bin first on PATH; show its output on failure."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", **kwargs.pop("env", {})}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def make_repo_copy(dest: Path, params: dict) -> Path:
    """A git repository with the project's pipeline files and the given params."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__",
                                                                              "index.html"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    write_params(params, dest / "params.yaml")
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.email", "test@example.com"], dest)
    run(["git", "config", "user.name", "test"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "initial"], dest)
    return dest


@pytest.fixture
def tiny_repo(tmp_path, tiny_model, tiny_data) -> Path:
    """A fresh git+DVC copy of the repo configured for the tiny model and data."""
    return make_repo_copy(tmp_path / "repo", tiny_params(tiny_model, tiny_data))


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, tiny_model, tiny_data) -> tuple[Path, str]:
    """A tiny repo after one `dvc repro` through the real CLI, and what it printed.
    Tests work on copies (`reproduced_repo`): one full run serves them all."""
    def build(folder: Path) -> None:
        repo = make_repo_copy(folder / "repo", tiny_params(tiny_model, tiny_data))
        (folder / "repro.out").write_text(run(["dvc", "repro"], repo).stdout)

    folder = shared(tmp_path_factory, "reproduced", build)
    return folder / "repo", (folder / "repro.out").read_text()


@pytest.fixture
def reproduced_repo(reproduced, tmp_path) -> Path:
    """A copy of the reproduced tiny repo (workspace, git history and DVC cache)."""
    return Path(shutil.copytree(reproduced[0], tmp_path / "repo", symlinks=True))


PIPELINE = ("fetch", "prepare", "pretrain", "tokenize", "train", "evaluate", "export",
            "baseline", "report", "card")


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, tiny_model, tiny_data):
    """Every stage's entry point once, in dvc.yaml's order, into a temporary folder: the
    tiny model fine-tuned and exported, scored, reported. Shared: treat as read-only."""
    from finetuning.config import config_from_dict

    def build(root: Path) -> None:
        params = {**tiny_params(tiny_model, tiny_data), "paths": paths_under(root)}
        params_file = write_params(params, root / "params.yaml")
        for stage in PIPELINE:
            run_stage_main(stage, params_file)

    root = shared(tmp_path_factory, "pipeline", build)
    return root, config_from_dict(yaml.safe_load((root / "params.yaml").read_text()))


def kill_after_checkpoint(command: list[str], cwd: Path, checkpoint: Path,
                          env: dict[str, str] | None = None, timeout: float = 300) -> None:
    """Start `command`, SIGKILL its process group as soon as `checkpoint` exists (a
    training run dying mid-way); fails if the run ends or stalls before that."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not checkpoint.exists():
            assert proc.poll() is None, "training finished before a checkpoint was seen"
            assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_bounded(command: list[str], cwd: Path, timeout: float,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `command` in its own process group. Past `timeout` seconds, ask the group for
    its Python stacks (SIGUSR1: DDP ranks print theirs, see training/runtime.py), kill it
    and fail with the end of its output, so a hang says where it hung."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGUSR1)
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{command} ran past {timeout} s; its stacks and output:\n"
                             f"{out[-2000:]}\n{err[-8000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of it outlives the test
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
