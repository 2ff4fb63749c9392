"""The `finetune` command: the user's entry point to everything that is not a DVC stage
(the stages run through `dvc repro`, or the Prefect flow).

    finetune predict MODEL INPUT [-o OUTPUT]   label a file of texts (or - for stdin)
    finetune serve MODEL [--port 8000]         answer requests over HTTP
    finetune check-params [--params FILE]      validate params without running a stage
    finetune preset NAME                       run presets/NAME.yaml as a DVC experiment
    finetune join --nnodes N --node-rank R --master-addr HOST   train on another machine
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from finetuning.config import PARAMS_FILE, load_config
from finetuning.errors import USER_ERRORS
from finetuning.inference.backends import BACKENDS
from finetuning.monitoring.drift import DriftWatch
from finetuning.training.launch import add_topology_options

log = logging.getLogger("finetune")


def check_params(args: argparse.Namespace) -> int:
    """Load and validate a params file as every stage does (the Prefect flow runs this
    before DVC touches any output)."""
    load_config(args.params)
    print(f"{args.params} is valid")
    return 0


def preset(args: argparse.Namespace) -> int:
    """Run presets/NAME.yaml the way `dvc exp run` runs an experiment: its overrides are
    checked, then `dvc exp run -n NAME -S key=value ...` runs the pipeline with them; the
    workspace ends with the preset's params and outputs, and `dvc exp show` lists it.
    params.yaml must be the committed one: the preset is laid over it."""
    import shlex
    import subprocess

    from finetuning.presets import check_committed, experiment_command

    command = experiment_command(args.name)
    if args.print:
        print(shlex.join(command))
        return 0
    check_committed()
    print(shlex.join(command), file=sys.stderr)
    return subprocess.call(command)


def join(args: argparse.Namespace) -> int:
    """Join node 0's training run from another machine: start this node's ranks of the
    train stage. Node 0 runs `dvc repro` and writes every output; this command does no
    DVC bookkeeping and writes nothing. Its tokenized data, params and base model must be
    node 0's: the ranks compare fingerprints and refuse to train on a mismatch."""
    from finetuning.errors import StageError
    from finetuning.pretraining.base import base_of
    from finetuning.training.launch import Topology, launch_distributed

    topology = Topology.from_args(args)
    if topology.nnodes < 2 or topology.node_rank == 0:
        raise StageError(f"join is for nodes 1..nnodes-1 of a run of several nodes (got "
                         f"--nnodes {topology.nnodes} --node-rank {topology.node_rank}); "
                         "node 0 runs the pipeline: PET_NNODES=<n> PET_NODE_RANK=0 dvc repro")
    os.environ["HF_HUB_OFFLINE"] = "1"  # as the stage itself: local folders only
    cfg = load_config(args.params)
    for what, path in (("tokenized data", cfg.paths.tokenized),
                       ("base model", base_of(cfg.paths))):
        if not Path(path).is_dir():
            raise StageError(f"{path} not found: this node needs node 0's {what} (`dvc pull "
                             "tokenize` or `dvc repro tokenize` at node 0's commit)")
    launch_distributed(topology, "stages.train", ["--params", args.params],
                       cfg.train.threads)
    return 0


def predict(args: argparse.Namespace) -> int:
    """Label every text of INPUT with the model; JSON Lines on standard output (or -o)."""
    from finetuning.inference.files import check_output, read_inputs, write_predictions
    from finetuning.inference.predictor import Predictor

    check_output(args.output)
    frame = read_inputs(args.input, args.text_column, args.text_pair_column)
    predictor = Predictor(args.model, args.backend, args.batch_size, args.threads)
    started = time.perf_counter()
    pairs = frame[args.text_pair_column].tolist() if args.text_pair_column else None
    scored = predictor.run(frame[args.text_column].tolist(), progress=True, pairs=pairs)
    seconds = time.perf_counter() - started
    write_predictions(frame, args.text_column, predictor.predictions(scored.logits),
                      args.output, args.text_pair_column)
    log.info("predicted %d texts in %.1f s (%s backend)%s", len(frame), seconds,
             predictor.backend.name, f", wrote {args.output}" if args.output else "")
    watch_batch(predictor, scored, args)
    return 0


def watch_batch(predictor, scored, args: argparse.Namespace) -> None:
    """The run's label mix, lengths and drift against validation, as `finetune serve`
    watches them: in the log, and in `--summary FILE` as JSON."""
    from finetuning.monitoring.drift import describe, summarize
    from finetuning.outputs import write_json

    summary = summarize(predictor.labels, scored.logits.argmax(-1), scored.lengths,
                        scored.truncated, predictor.reference)
    drifted = summary["drift"] and max(summary["drift"].values()) > args.drift_threshold
    (log.warning if drifted else log.info)("summary: %s", describe(summary, args.drift_threshold))
    if args.summary:
        write_json(args.summary, {**summary, "threshold": args.drift_threshold})


def serve(args: argparse.Namespace) -> int:
    """Serve the model over HTTP until SIGINT or SIGTERM."""
    # oneDNN caches compiled kernels per tensor shape, and a server sees every (batch,
    # length) shape: its memory crept up 100 MB in 60 s of load (benchmarks/soak.py) and
    # stays flat without the cache, at the same requests/s. Read when torch loads.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    import uvicorn

    from finetuning.inference.predictor import Predictor
    from finetuning.inference.service import Limits, create_app

    for stop in (signal.SIGINT, signal.SIGTERM):
        # Asked to stop is a success: exit 0. uvicorn shuts down gracefully on these, then
        # raises the signal again, which lands here (as it would while the model loads).
        signal.signal(stop, exit_cleanly)
    limits = Limits(args.max_inputs, args.max_chars, args.max_batch_size, args.max_wait_ms)
    watch = DriftWatch(args.drift_window, args.drift_min, args.drift_threshold)
    predictor = Predictor(args.model, args.backend, args.max_batch_size, args.threads)
    app = create_app(predictor, limits, Path(args.metrics), watch)
    log.info("serving %s (%s backend) on http://%s:%d (docs at /docs)", args.model,
             predictor.backend.name, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info",
                timeout_graceful_shutdown=10)
    return 0


def exit_cleanly(signum: int, frame) -> None:
    """A signal handler that ends the process with status 0."""
    raise SystemExit(0)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """MODEL and how it runs, shared by predict and serve."""
    parser.add_argument("model", metavar="MODEL",
                        help="a fine-tuned HF folder (models/finetuned) or the export stage's "
                        "ONNX folder (models/onnx)")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                        help="auto: torch for a HF folder, onnx for an export (default: auto)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads; 0 = torch's default (default: %(default)s)")


def add_drift_threshold(parser: argparse.ArgumentParser) -> None:
    """The PSI above which drift is logged as a warning, shared by predict and serve."""
    parser.add_argument("--drift-threshold", type=float, default=DriftWatch.threshold,
                        help="PSI of labels or token lengths against validation above which "
                        "the log warns (0.1: moderate, 0.25: large shift; default: "
                        "%(default)s)")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """predict, serve, then the pipeline commands."""
    parser = commands.add_parser("predict", help="label a file of texts with a model",
                                 description=predict.__doc__)
    add_model_options(parser)
    parser.add_argument("input", metavar="INPUT", help="a .txt file (one text per line), a "
                        "CSV/TSV/JSON/JSONL/Parquet table, or - for standard input")
    parser.add_argument("-o", "--output", help="a .jsonl file, or .csv/.tsv (the input's "
                        "columns plus label and score); default: JSON Lines on stdout")
    parser.add_argument("--text-column", default="text", help="column of texts in a table "
                        "(default: %(default)s)")
    parser.add_argument("--text-pair-column", metavar="COLUMN", help="column of the second "
                        "texts of sentence pairs in a table, for a model trained on pairs "
                        "(prepare.text_pair_column)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass, "
                        "length-sorted (default: %(default)s)")
    parser.add_argument("--summary", metavar="FILE", help="also write the run's label mix, "
                        "token lengths and drift against validation here as JSON")
    add_drift_threshold(parser)
    parser.set_defaults(run=predict)

    parser = commands.add_parser("serve", help="serve a model over HTTP (Hugging Face's "
                                 "text-classification API)", description=serve.__doc__)
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; the service "
                        "has no authentication of its own (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=32,
                        help="texts per forward pass across requests (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request "
                        "waits for others to share its batch (default: %(default)s)")
    parser.add_argument("--max-inputs", type=int, default=64,
                        help="texts per request; more gets 413 (default: %(default)s)")
    parser.add_argument("--max-chars", type=int, default=10_000,
                        help="characters per text; more gets 413 (default: %(default)s)")
    parser.add_argument("--metrics", default="metrics/eval.json", help="eval metrics shown by "
                        "/metadata when the file exists (default: %(default)s)")
    parser.add_argument("--drift-window", type=int, default=DriftWatch.window,
                        help="predictions in the rolling drift window (default: %(default)s)")
    parser.add_argument("--drift-min", type=int, default=DriftWatch.minimum,
                        help="predictions before drift is computed (default: %(default)s)")
    add_drift_threshold(parser)
    parser.set_defaults(run=serve)
    add_pipeline_commands(commands)


def add_pipeline_commands(commands: argparse._SubParsersAction) -> None:
    """join, preset, check-params: the commands that run or check pipeline stages."""
    parser = commands.add_parser("join", help="train on this machine as node 1.. of node "
                                 "0's multi-node run", description=join.__doc__)
    parser.add_argument("--params", default=PARAMS_FILE,
                        help="params file, node 0's (default: %(default)s)")
    add_topology_options(parser)
    parser.set_defaults(run=join)

    parser = commands.add_parser("preset", help="run a named setup of presets/ as the DVC "
                                 "experiment of that name", description=preset.__doc__)
    parser.add_argument("name", help="a presets/<name>.yaml (e.g. zh-scratch)")
    parser.add_argument("--print", action="store_true",
                        help="print the dvc exp run command instead of running it")
    parser.set_defaults(run=preset)

    parser = commands.add_parser("check-params", help="validate params.yaml as the stages "
                                 "would, without running one", description=check_params.__doc__)
    parser.add_argument("--params", default=PARAMS_FILE,
                        help="params file to check (default: %(default)s)")
    parser.set_defaults(run=check_params)


def build_parser() -> argparse.ArgumentParser:
    """The command line, one subcommand per task."""
    parser = argparse.ArgumentParser(
        prog="finetune", description="Use a fine-tuned text classifier and the pipeline "
        "around it. The pipeline's stages run with `dvc repro`; see README.md.")
    add_commands(parser.add_subparsers(title="commands", metavar="COMMAND", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `finetune` (and `python -m finetuning`); returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
