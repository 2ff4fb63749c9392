"""What pretraining buys: zh-scratch against the same BERT fine-tuned with no pretraining
and against the character n-gram baseline; en-itpt against the default run.

    python -m benchmarks.pretraining --run --json benchmarks/results/pretraining-2cpu.json

`--run` runs each arm as a DVC experiment of its name in a temporary copy of the
workspace (`dvc exp run --temp -n <arm> -S ...`: the preset's overrides, plus the arm's
own), one after the other, timed end to end; the workspace and its outputs are left
alone. Without `--run` it reads the arms already saved as experiments (by `make preset`,
or `dvc exp run -n zh-nopretrain -S pretrain.steps=0` after it). Either way the figures
come from `dvc exp show --json -A`: each arm's newest experiment of that name.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from finetuning.presets import overrides, read_preset

# arm: (preset, extra -S overrides); the default run is HEAD's own metrics
ARMS = {"zh-scratch": ("zh-scratch", []),
        "zh-nopretrain": ("zh-scratch", ["pretrain.steps=0"]),
        "en-itpt": ("en-itpt", [])}


def run_arm(name: str) -> float:
    """One arm as a temporary DVC experiment; its wall-clock seconds."""
    preset, extra = ARMS[name]
    sets = [*overrides(read_preset(preset)), *extra]
    started = time.perf_counter()
    subprocess.run(["dvc", "exp", "run", "--temp", "-n", name,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the arms first")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    wall = {name: round(run_arm(name), 1) for name in args.arms} if args.run else {}
    saved = experiments()
    missing = [name for name in args.arms if name not in saved]
    if missing:
        print(f"no experiment named {', '.join(missing)}: run them first (--run, or "
              "make preset NAME=...)", file=sys.stderr)
        return 1
    rows = {name: {**figures(saved[name]), **({"wall_seconds": wall[name]} if wall else {})}
            for name in [*args.arms, "HEAD"] if name in saved}
    for name, row in rows.items():
        print(f"{name:14} " + "  ".join(f"{k}={v:.4g}" for k, v in row.items()))
    if "zh-scratch" in rows and "zh-nopretrain" in rows:
        ours = rows["zh-scratch"]
        print(f"zh-scratch: pretraining "
              f"{(ours['test_accuracy'] - rows['zh-nopretrain']['test_accuracy']) * 100:+.2f}"
              f" points over none, "
              f"{(ours['test_accuracy'] - ours['baseline_test_accuracy']) * 100:+.2f} over "
              "the baseline")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
