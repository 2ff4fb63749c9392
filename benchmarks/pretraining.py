"""What pretraining buys: zh-scratch against the same BERT fine-tuned with no pretraining
and against the character n-gram baseline; en-itpt against the default run.

    python -m benchmarks.pretraining --run --json benchmarks/results/pretraining-2cpu.json

`--run` runs each arm as a DVC experiment of its name in a temporary copy of the
workspace (`dvc exp run --temp -n <arm> -S ...`: the preset's overrides, plus the arm's
own), one after the other, timed end to end; the workspace and its outputs are left
alone. Without `--run` it reads the arms already saved as experiments (by `make preset`,
or `dvc exp run -n zh-nopretrain -S pretrain.steps=0` after it). Either way the figures
come from `dvc exp show --json -A`: each arm's newest experiment of that name.

One seed's fine-tuning moves test accuracy by a point or more here, so `--seeds 1 2`
adds each arm again as `<arm>-seed1`, `<arm>-seed2` with that `train.seed` (the fine-tune
seed) and prints each arm's mean and spread, and pretraining's gain per seed (zh-scratch
less zh-nopretrain, same seed). Under `--run` each seed pretrains again: DVC's run-cache
skips stages with a persistent output, as pretrain's checkpoints are. To pretrain once,
run the seeds in the workspace after the preset, then read them back:

    make preset NAME=zh-scratch
    dvc exp run -n zh-scratch-seed1 -S train.seed=1
    dvc exp run -n zh-nopretrain -S pretrain.steps=0 -S train.seed=42
    dvc exp run -n zh-nopretrain-seed1 -S pretrain.steps=0 -S train.seed=1
    python -m benchmarks.pretraining --arms zh-scratch zh-nopretrain --seeds 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from finetuning.presets import overrides, read_preset

# arm: (preset, extra -S overrides); the default run is HEAD's own metrics
ARMS = {"zh-scratch": ("zh-scratch", []),
        "zh-nopretrain": ("zh-scratch", ["pretrain.steps=0"]),
        "en-itpt": ("en-itpt", []),
        # what twice the pretraining would buy (over the 20-minute budget; not run by default)
        "zh-scratch-6000": ("zh-scratch", ["pretrain.steps=6000"])}
DEFAULT_ARMS = ["zh-scratch", "zh-nopretrain", "en-itpt"]


def with_params_seed(seeds: list[int]) -> list[int | None]:
    """The fine-tune seeds of each arm: params.yaml's own (None), then `seeds`."""
    return [None, *seeds]


def seeded(arm: str, seed: int | None) -> str:
    """The experiment name of `arm` fine-tuned with `train.seed` `seed` (None: params')."""
    return arm if seed is None else f"{arm}-seed{seed}"


def run_arm(arm: str, seed: int | None) -> float:
    """One arm as a temporary DVC experiment; its wall-clock seconds."""
    preset, extra = ARMS[arm]
    sets = [*overrides(read_preset(preset)), *extra,
            *([f"train.seed={seed}"] if seed is not None else [])]
    started = time.perf_counter()
    subprocess.run(["dvc", "exp", "run", "--temp", "-n", seeded(arm, seed),
                    *(a for s in sets for a in ("-S", s))], check=True)
    return time.perf_counter() - started


def experiments() -> dict[str, dict]:
    """Every saved experiment's metrics by name (the newest of a name), and HEAD's."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json", "-A"], check=True,
                                      capture_output=True, text=True).stdout)
    found: dict[str, dict] = {}
    for commit in shown:
        if commit.get("name") and commit["rev"] != "workspace" and "HEAD" not in found:
            found["HEAD"] = commit["data"]  # the first commit listed is HEAD
        for exp in commit.get("experiments") or []:
            rev = exp["revs"][0]
            if rev.get("name") and rev["name"] not in found:
                found[rev["name"]] = rev["data"]
    return found


def figures(data: dict) -> dict:
    """The comparison's figures of one run, from its DVC metrics."""
    metrics = {k: v.get("data", {}) for k, v in (data.get("metrics") or {}).items()}
    pretrain = metrics.get("metrics/pretrain.json", {})
    scores, baseline = metrics["metrics/eval.json"], metrics["metrics/baseline.json"]
    return {"test_accuracy": scores["test"]["accuracy"],
            "baseline_test_accuracy": baseline["test"]["accuracy"],
            "validation_accuracy": scores["validation"]["accuracy"],
            "baseline_validation_accuracy": baseline["validation"]["accuracy"],
            "pretrain_steps": pretrain.get("steps", 0),
            "pretrain_seconds": pretrain.get("seconds", 0.0),
            "train_seconds": metrics["metrics/train.json"]["train_seconds"]}


def spread(rows: dict[str, dict], arm: str, seeds: list[int]) -> dict:
    """Test and validation accuracy of `arm` over its seeds: each, their mean and sample
    standard deviation (0 for one seed)."""
    runs = [rows[seeded(arm, seed)] for seed in with_params_seed(seeds)]
    out: dict = {"runs": len(runs)}
    for key in ("test_accuracy", "validation_accuracy"):
        values = [run[key] for run in runs]
        out[key] = values
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def gains(rows: dict[str, dict], seeds: list[int]) -> dict:
    """Points of test accuracy zh-scratch gains over zh-nopretrain and over its baseline,
    per fine-tune seed and on average."""
    names = [(seeded("zh-scratch", s), seeded("zh-nopretrain", s))
             for s in with_params_seed(seeds)]
    over_none = [(rows[a]["test_accuracy"] - rows[b]["test_accuracy"]) * 100 for a, b in names]
    over_baseline = [(rows[a]["test_accuracy"] - rows[a]["baseline_test_accuracy"]) * 100
                     for a, _ in names]
    return {"over_no_pretraining": over_none, "over_baseline": over_baseline,
            "over_no_pretraining_mean": statistics.fmean(over_none),
            "over_baseline_mean": statistics.fmean(over_baseline)}


def report(rows: dict[str, dict], arms: list[str], seeds: list[int]) -> dict:
    """Print every run, then each arm's spread over seeds and pretraining's gain."""
    for name, row in rows.items():
        print(f"{name:20} " + "  ".join(f"{k}={v:.4g}" for k, v in row.items()))
    summary = {"seeds": ["params", *seeds],
               "arms": {arm: spread(rows, arm, seeds) for arm in arms}}
    for arm, s in summary["arms"].items():
        print(f"{arm}: test {s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f}, "
              f"validation {s['validation_accuracy_mean']:.4f} ± "
              f"{s['validation_accuracy_std']:.4f} over {s['runs']} fine-tune seed(s)")
    if {"zh-scratch", "zh-nopretrain"} <= set(arms):
        summary["zh_gain_points"] = g = gains(rows, seeds)
        print("zh-scratch: pretraining " + ", ".join(f"{x:+.2f}" for x in
              g["over_no_pretraining"]) + f" points over none (mean "
              f"{g['over_no_pretraining_mean']:+.2f}), {g['over_baseline_mean']:+.2f} over "
              "the baseline on average")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the arms first")
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[], metavar="N",
                        help="also each arm with train.seed N, as <arm>-seedN")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    runs = [(arm, s) for arm in args.arms for s in with_params_seed(args.seeds)]
    names = [seeded(*r) for r in runs]
    wall = {n: round(run_arm(*r), 1) for n, r in zip(names, runs)} if args.run else {}
    saved = experiments()
    missing = [name for name in names if name not in saved]
    if missing:
        print(f"no experiment named {', '.join(missing)}: run them first (--run, or "
              "make preset NAME=...)", file=sys.stderr)
        return 1
    rows = {name: {**figures(saved[name]), **({"wall_seconds": wall[name]} if wall else {})}
            for name in [*names, "HEAD"] if name in saved}
    summary = report(rows, args.arms, args.seeds)
    if args.json:
        args.json.write_text(json.dumps({**rows, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
