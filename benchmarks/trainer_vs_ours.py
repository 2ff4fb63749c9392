"""Our train loop against `transformers.Trainer` on the same work, on this machine.

Every contender fine-tunes the pipeline's base model (params.yaml `paths.base_model`) on
its tokenized splits (`paths.tokenized`, written by `dvc repro`) with the `train:`
hyperparameters, each run in its own subprocess so peak RSS is that run's alone:

  ours             the train stage's Trainer.fit (finetuning.training): length-grouped batches
                   cut from flat token arrays, padded per batch
  trainer-default  transformers.Trainer as its documentation sets it up: a
                   datasets.Dataset of input_ids/attention_mask/labels,
                   DataCollatorWithPadding, the default (random) sampler
  trainer-grouped  the same with train_sampling_strategy="group_by_length"
  ours-compile     opt-in: ours with the model wrapped in torch.compile(dynamic=True)

The same work on both sides: every training row once per epoch, batch size, AdamW with
weight decay off biases and norm weights, linear warmup/decay, gradient clipping, a
validation pass (loss + accuracy) at the end of each epoch and a loss log every
`tensorboard.log_every` steps. Neither saves checkpoints (Trainer: save_strategy="no";
ours: train.checkpoint_every=0). Trainer reports nowhere (report_to="none"); ours writes
everything its `tensorboard:` params ask for (scalars, histograms, PR curves, confusion
image, mistakes) to a temporary folder, as the stage does: extra work on our side. The timed
span is the training call alone (`fit` / `Trainer.train`, validation passes included);
loading, data conversion and the test pass are outside it. Test accuracy is computed for
every contender by the same code (finetuning.inference), on the same rows.

Repetitions rotate the order of the contenders (a, b, c / b, c, a / ...) so drift in the
machine's load does not favour whoever runs first, and repetition r trains every
contender with seed `train.seed + r` (head initialisation, dropout, data order), so the
median test accuracy is over several seeds, not one draw; the table shows medians.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.flops import linear_weights, matmul_peak, mfu

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ("ours", "trainer-default", "trainer-grouped", "ours-compile")
DEFAULT_CONTENDERS = CONTENDERS[:3]
BASELINES = ("trainer-default", "trainer-grouped")
# Acceptance targets: ours' samples/s over each Trainer setup's.
SPEED_TARGETS = {"trainer-default": 1.3, "trainer-grouped": 1.0}
ACCURACY_SLACK_POINTS = 0.5

log = logging.getLogger("benchmarks.trainer_vs_ours")


# --- pure helpers (unit-tested) ---------------------------------------------------------

def rotated_order(contenders: Sequence[str], repeat: int) -> list[str]:
    """Contenders of repetition `repeat`, rotated by one each time (a,b,c / b,c,a / ...)."""
    shift = repeat % len(contenders)
    return list(contenders[shift:]) + list(contenders[:shift])


def train_subset(num_rows: int, max_rows: int, seed: int) -> np.ndarray | None:
    """Sorted random row indices when `max_rows` caps the training split, else None."""
    if not max_rows or max_rows >= num_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(num_rows, max_rows, replace=False))


def real_tokens(lengths: np.ndarray, epochs: int) -> int:
    """Unpadded tokens a run processes: every row once per epoch."""
    return int(np.asarray(lengths, dtype=np.int64).sum()) * epochs


def padded_tokens(batches: Sequence[np.ndarray], lengths: np.ndarray) -> int:
    """Tokens actually computed when each batch is padded to its longest row."""
    return int(sum(len(rows) * int(lengths[rows].max()) for rows in batches))


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Median (and the spread of samples/s) of each contender's runs."""
    keys = ("train_seconds", "samples_per_second", "tokens_per_second", "peak_rss_mib",
            "test_accuracy", "padding_efficiency", "cpu_share", "mfu")
    out = {}
    for name in dict.fromkeys(run["contender"] for run in runs):
        mine = [run for run in runs if run["contender"] == name]
        out[name] = {key: statistics.median(run[key] for run in mine) for key in keys}
        speeds = [run["samples_per_second"] for run in mine]
        out[name].update(runs=len(mine), samples_per_second_min=min(speeds),
                         samples_per_second_max=max(speeds))
    return out


def compare(summary: dict[str, dict[str, float]], ours: str = "ours") -> dict[str, dict]:
    """Ratios of `ours` over each Trainer setup that ran: speed (>1 is faster), peak RSS
    (<1 is leaner) and the test-accuracy difference in points (>0 is better)."""
    mine = summary[ours]
    out = {}
    for base in BASELINES:
        if base not in summary:
            continue
        other = summary[base]
        out[base] = {
            "samples_per_second": mine["samples_per_second"] / other["samples_per_second"],
            "tokens_per_second": mine["tokens_per_second"] / other["tokens_per_second"],
            "peak_rss": mine["peak_rss_mib"] / other["peak_rss_mib"],
            "test_accuracy_points": 100 * (mine["test_accuracy"] - other["test_accuracy"]),
        }
    return out


def check_targets(ratios: dict[str, dict]) -> list[dict]:
    """The acceptance targets against the measured ratios: speed, RSS, accuracy."""
    checks = []
    for base, ratio in ratios.items():
        target = SPEED_TARGETS[base]
        checks += [
            {"target": f"samples/s ours/{base} >= {target}",
             "value": ratio["samples_per_second"], "ok": ratio["samples_per_second"] >= target},
            {"target": f"peak RSS ours/{base} <= 1.0",
             "value": ratio["peak_rss"], "ok": ratio["peak_rss"] <= 1.0},
            {"target": f"test accuracy ours - {base} >= -{ACCURACY_SLACK_POINTS} points",
             "value": ratio["test_accuracy_points"],
             "ok": ratio["test_accuracy_points"] >= -ACCURACY_SLACK_POINTS},
        ]
    return checks


def format_report(summary: dict[str, dict], ratios: dict[str, dict], checks: list[dict],
                  machine: dict) -> str:
    """The human-readable result: medians per contender, ratios, targets, machine."""
    lines = [f"{'contender':<16} {'runs':>4} {'wall s':>8} {'samples/s':>10} "
             f"{'(min-max)':>13} {'tokens/s':>9} {'pad eff':>7} {'peak RSS MiB':>12} "
             f"{'test acc':>8} {'CPU got':>7} {'MFU':>6}"]
    for name, row in summary.items():
        spread = f"{row['samples_per_second_min']:.1f}-{row['samples_per_second_max']:.1f}"
        lines.append(f"{name:<16} {row['runs']:>4} {row['train_seconds']:>8.1f} "
                     f"{row['samples_per_second']:>10.1f} {spread:>13} "
                     f"{row['tokens_per_second']:>9.0f} {row['padding_efficiency']:>7.2f} "
                     f"{row['peak_rss_mib']:>12.0f} {row['test_accuracy']:>8.4f} "
                     f"{row['cpu_share']:>7.0%} {row['mfu']:>6.1%}")
    if ratios:
        lines += ["", f"{'ours / ...':<16} {'samples/s':>10} {'tokens/s':>9} {'peak RSS':>9} "
                      f"{'test acc (points)':>18}"]
        for base, ratio in ratios.items():
            lines.append(f"{base:<16} {ratio['samples_per_second']:>9.2f}x "
                         f"{ratio['tokens_per_second']:>8.2f}x {ratio['peak_rss']:>8.2f}x "
                         f"{ratio['test_accuracy_points']:>+18.2f}")
    if checks:
        lines += [""] + [f"[{'PASS' if c['ok'] else 'MISS'}] {c['target']}: {c['value']:.3f}"
                         for c in checks]
    load = machine["load_average"]
    lines += ["", f"medians over repetitions; load average (1 min, this benchmark's own "
                  f"threads included) around runs: min {load['min']:.2f}, median "
                  f"{load['median']:.2f}, max {load['max']:.2f} on {machine['cpu_count']} CPUs; "
                  f"torch threads {machine['torch_threads']}; CPU got = CPU seconds / "
                  f"(process seconds x threads); MFU against the measured fp32 matmul peak, "
                  f"{machine['matmul_peak_flops'] / 1e9:.1f} GFLOP/s (benchmarks/flops.py)"]
    return "\n".join(lines)


# --- one run (in a worker subprocess) ---------------------------------------------------

def load_setup(args: argparse.Namespace, workdir: Path):
    """The validated config with the CLI's overrides, every output path moved into
    `workdir`, and the tokenized splits (the training split capped to --max-train-rows;
    the capped copy is written under `workdir` for the stage code to load)."""
    import datasets

    from finetuning.config import load_config

    cfg = load_config(args.params)
    train = {"epochs": args.epochs, "checkpoint_every": 0,  # Trainer saves nothing either
             "seed": cfg.train.seed + args.repeat}
    if args.batch_size:
        train["batch_size"] = args.batch_size
    if args.threads:
        train["threads"] = args.threads
    dataset = datasets.load_from_disk(cfg.paths.tokenized)
    missing = {"train", "validation", "test"} - set(dataset)
    if missing:
        raise SystemExit(f"{cfg.paths.tokenized} lacks splits {sorted(missing)}: run `dvc repro`")
    paths = {"tensorboard": str(workdir / "tensorboard"),
             "checkpoints": str(workdir / "checkpoints")}
    rows = train_subset(len(dataset["train"]), args.max_train_rows, cfg.train.seed)
    if rows is not None:
        dataset["train"] = dataset["train"].select(rows, keep_in_memory=True)
        paths["tokenized"] = str(workdir / "tokenized")
        dataset.save_to_disk(paths["tokenized"])
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train),
                              paths=dataclasses.replace(cfg.paths, **paths))
    return cfg, dataset


def train_ours(cfg, compiled: bool) -> tuple[object, dict]:
    """Train with the train stage's own Trainer (build_trainer + fit), as
    `python -m stages.train` does up to the end of fit; return (model, figures)."""
    import torch

    from finetuning.training.runtime import init_runtime
    from finetuning.training.session import build_trainer

    runtime = init_runtime(cfg.train.threads)
    trainer, _ = build_trainer(cfg, runtime)
    if compiled:
        trainer.model = torch.compile(trainer.module, dynamic=True)
    started = time.perf_counter()
    try:
        trainer.fit()
    finally:
        seconds = time.perf_counter() - started
        trainer.monitor.writer.close()
    lengths = trainer.splits["train"].lengths
    padded = sum(padded_tokens(trainer.epoch_batches(epoch), lengths)
                 for epoch in range(cfg.train.epochs))
    return trainer.module, {"train_seconds": seconds, "padded_tokens": padded,
                            "validation_accuracy": trainer.progress.validation.get("accuracy")}


def count_training_tokens(model) -> list[int]:
    """Count the (padded) tokens the model computes in training mode, via a forward
    pre-hook: evaluation batches are left out. Returns the one-item running total."""
    total = [0]

    def hook(module, args, kwargs):
        if module.training:
            total[0] += kwargs["input_ids"].numel()

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return total


def trainer_dataset(split):
    """A tokenized split in the form Trainer's docs use: input_ids, attention_mask, labels."""
    split = split.map(lambda batch: {"attention_mask": [[1] * len(ids)
                                                        for ids in batch["input_ids"]]},
                      batched=True, keep_in_memory=True)  # never write into the DVC output
    return split.remove_columns(["truncated"]).rename_column("label", "labels")


def train_trainer(cfg, dataset, model_dir: str, grouped: bool) -> tuple[object, dict]:
    """Train with transformers.Trainer set up as documented; return (model, figures)."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from finetuning.data.tokenizer import load_tokenizer
    from finetuning.inference.model import load_classifier
    from finetuning.metrics import classification_report

    tcfg = cfg.train
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    labels = cfg.prepare.labels
    tokenizer = load_tokenizer(model_dir)
    set_seed(tcfg.seed)  # the new head's initial weights, as ours seeds before loading
    model = load_classifier(model_dir, labels)  # the same head and attention as ours
    padded = count_training_tokens(model)

    def compute_metrics(prediction):
        return classification_report(torch.as_tensor(prediction.predictions),
                                     prediction.label_ids, len(labels))

    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=tcfg.epochs,
            per_device_train_batch_size=tcfg.batch_size,
            per_device_eval_batch_size=tcfg.batch_size * 4,  # what ours validates with
            gradient_accumulation_steps=tcfg.grad_accum_steps,
            learning_rate=tcfg.learning_rate,
            weight_decay=tcfg.weight_decay,
            lr_scheduler_type="linear",
            warmup_steps=tcfg.warmup,  # transformers 5: a float in [0, 1) is a ratio
            max_grad_norm=tcfg.max_grad_norm,
            bf16=tcfg.precision == "bf16",
            fp16=tcfg.precision == "fp16",
            seed=tcfg.seed,
            eval_strategy="epoch",
            logging_strategy="steps",
            logging_steps=cfg.tensorboard.log_every,
            save_strategy="no",
            report_to="none",
            train_sampling_strategy="group_by_length" if grouped else "random",
        )
        trainer = Trainer(model=model, args=arguments,
                          data_collator=DataCollatorWithPadding(tokenizer),
                          train_dataset=trainer_dataset(dataset["train"]),
                          eval_dataset=trainer_dataset(dataset["validation"]),
                          processing_class=tokenizer, compute_metrics=compute_metrics)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    evals = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry]
    return trainer.model, {"train_seconds": seconds, "padded_tokens": padded[0],
                           "validation_accuracy": evals[-1]["eval_accuracy"] if evals else None,
                           "optimizer": arguments.optim}


def run_worker(args: argparse.Namespace) -> dict:
    """Train one contender, score it on the test split, return its figures."""
    import torch

    from finetuning.data.batching import split_from_dataset
    from finetuning.data.tokenizer import load_tokenizer
    from finetuning.inference.model import predict_logits
    from finetuning.metrics import classification_report

    with tempfile.TemporaryDirectory(prefix="bench-run-") as workdir:
        cfg, dataset = load_setup(args, Path(workdir))
        model_dir = cfg.paths.base_model
        if args.worker.startswith("ours"):
            model, figures = train_ours(cfg, args.worker == "ours-compile")
        else:
            model, figures = train_trainer(cfg, dataset, model_dir,
                                           args.worker == "trainer-grouped")
        test = split_from_dataset(dataset["test"])
        logits = predict_logits(model, test, cfg.evaluate.batch_size,
                                load_tokenizer(model_dir).pad_token_id,
                                next(model.parameters()).device)  # where training left it
    train_lengths = split_from_dataset(dataset["train"]).lengths
    samples = len(train_lengths) * cfg.train.epochs
    tokens = real_tokens(train_lengths, cfg.train.epochs)
    seconds = figures["train_seconds"]
    return {**figures, "contender": args.worker, "samples": samples, "real_tokens": tokens,
            "samples_per_second": samples / seconds, "tokens_per_second": tokens / seconds,
            "padding_efficiency": tokens / figures["padded_tokens"],
            "test_accuracy": classification_report(logits, test.labels,
                                                   len(cfg.prepare.labels))["accuracy"],
            "seed": cfg.train.seed, "torch_threads": torch.get_num_threads()}


# --- the driver ---------------------------------------------------------------------------

def worker_argv(args: argparse.Namespace, contender: str, result: Path,
                repeat: int) -> list[str]:
    """Command line of one worker subprocess: the same settings, one contender."""
    argv = [sys.executable, "-m", "benchmarks.trainer_vs_ours", "--worker", contender,
            "--result", str(result), "--params", args.params, "--epochs", str(args.epochs),
            "--max-train-rows", str(args.max_train_rows), "--threads", str(args.threads),
            "--batch-size", str(args.batch_size), "--repeat", str(repeat)]
    return argv


def wait_for_quiet(max_load: float, poll_seconds: float = 10.0) -> None:
    """Block until the 1-minute load average is below `max_load` (0: do not wait)."""
    if max_load and os.getloadavg()[0] >= max_load:
        log.info("waiting for the load average (%.2f) to drop below %.2f ...",
                 os.getloadavg()[0], max_load)
        while os.getloadavg()[0] >= max_load:
            time.sleep(poll_seconds)


def run_contender(args: argparse.Namespace, contender: str, workdir: Path, repeat: int) -> dict:
    """Run one contender in a fresh subprocess; add its peak RSS (from wait4: this child
    alone, unlike RUSAGE_CHILDREN, which keeps the maximum over every child so far)."""
    result = workdir / f"{contender}-{repeat}.json"
    logfile = workdir / f"{contender}-{repeat}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "HF_HUB_OFFLINE": "1"}
    wait_for_quiet(args.max_load)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with logfile.open("w") as out:
        process = subprocess.Popen(worker_argv(args, contender, result, repeat), stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = logfile.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{contender} run {repeat} failed ({process.returncode}):\n{tail}")
    seconds = time.perf_counter() - started
    figures = json.loads(result.read_text())
    # CPU time the run got over what its threads could have used: well below 100% means
    # other processes took cores from it (a noisy figure).
    cpu_share = (usage.ru_utime + usage.ru_stime) / (seconds * figures["torch_threads"])
    figures.update(repeat=repeat, peak_rss_mib=usage.ru_maxrss / 1024,  # Linux: KiB
                   process_seconds=seconds, cpu_share=cpu_share, load_before=load_before,
                   load_after=os.getloadavg()[0])
    figures["load_average"] = max(figures["load_before"], figures["load_after"])
    return figures


def machine_info(runs: list[dict]) -> dict:
    """Where the figures came from: CPUs, threads, versions, load during the runs."""
    import torch
    import transformers

    loads = [run["load_average"] for run in runs] or [os.getloadavg()[0]]
    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "torch_threads": runs[0]["torch_threads"] if runs else torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "load_average": {"min": min(loads), "median": statistics.median(loads),
                             "max": max(loads)}}


def benchmark(args: argparse.Namespace) -> dict:
    """All repetitions of all contenders, then medians, ratios and target checks."""
    from finetuning.config import load_config

    import torch

    cfg = load_config(args.params)
    if args.threads:  # the peak on the workers' threads
        torch.set_num_threads(args.threads)
    peak = matmul_peak()  # this machine's, now: MFU is against it
    weights = linear_weights(cfg.paths.base_model, cfg.prepare.labels)
    runs = []
    with tempfile.TemporaryDirectory(prefix="trainer-vs-ours-") as tmp:
        for repeat in range(args.repeats):
            for contender in rotated_order(args.contenders, repeat):
                for attempt in range(1 + args.retries):
                    log.info("repetition %d/%d: %s", repeat + 1, args.repeats, contender)
                    run = run_contender(args, contender, Path(tmp), repeat)
                    log.info("  %.1f samples/s, test accuracy %.4f, peak RSS %.0f MiB, "
                             "load %.2f, CPU got %.0f%%", run["samples_per_second"],
                             run["test_accuracy"], run["peak_rss_mib"], run["load_average"],
                             100 * run["cpu_share"])
                    if run["cpu_share"] >= args.min_cpu_share:
                        break
                    log.info("  other processes took its CPU: run %s", "again" if
                             attempt < args.retries else "kept, no retries left")
                runs.append({**run, "mfu": mfu(run, weights, peak)})
    summary = summarize(runs)
    ratios = compare(summary) if "ours" in summary else {}
    hidden = ("worker", "result", "repeat", "json")
    return {"settings": {k: v for k, v in vars(args).items() if k not in hidden},
            "machine": {**machine_info(runs), "matmul_peak_flops": peak,
                        "linear_weights": weights}, "runs": runs, "summary": summary,
            "ratios": ratios, "targets": check_targets(ratios)}


def parse_contenders(text: str) -> list[str]:
    """Comma-separated contender names, checked."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown contender(s) {unknown}; choose from "
                                         f"{', '.join(CONTENDERS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line (see --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.trainer_vs_ours",
        description="Train the pipeline's default model on its tokenized data with our "
                    "train loop and with transformers.Trainer (defaults, and its "
                    "length-grouped sampler), alternating, each run in its own process; "
                    "print wall time, samples/s, real (unpadded) tokens/s, peak RSS and "
                    "test accuracy (medians) and the ratios ours/Trainer. Needs "
                    "`dvc repro` to have written the tokenized data and the base model.",
        epilog="Example: python -m benchmarks.trainer_vs_ours --repeats 3 --json "
               "bench.json. Quick look: --repeats 1 --max-train-rows 1000.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3,
                        help="repetitions of every contender (repetition r: order rotated "
                             "by r, seed train.seed + r for every contender)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="training epochs per run (params.yaml's train.epochs is not used)")
    parser.add_argument("--max-train-rows", type=int, default=0,
                        help="train on a random subset of this many rows (0 = all)")
    parser.add_argument("--contenders", type=parse_contenders,
                        default=",".join(DEFAULT_CONTENDERS),
                        help=f"comma-separated subset of {', '.join(CONTENDERS)}")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads in every run (0 = torch's default)")
    parser.add_argument("--max-load", type=float, default=0.0,
                        help="before each run, wait until the 1-minute load average is below "
                             "this (on a shared machine; 0 = start at once)")
    parser.add_argument("--min-cpu-share", type=float, default=0.0,
                        help="rerun a run (up to --retries times) that got less than this "
                             "fraction of its threads' CPU time, e.g. 0.85 on a shared machine")
    parser.add_argument("--retries", type=int, default=2,
                        help="reruns allowed per run under --min-cpu-share")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="override train.batch_size (0 = params.yaml's)")
    parser.add_argument("--params", default="params.yaml",
                        help="params file: hyperparameters (train:), the log interval "
                             "(tensorboard.log_every) and the paths of the base model, "
                             "prepared and tokenized data")
    parser.add_argument("--json", default="", help="also write every figure to this JSON file")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        figures = run_worker(args)
        Path(args.result).write_text(json.dumps(figures))
        return 0
    if args.repeats < 1 or args.epochs < 1:
        raise SystemExit("--repeats and --epochs must be >= 1")
    report = benchmark(args)
    print(format_report(report["summary"], report["ratios"], report["targets"],
                        report["machine"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
