"""The `finetune` command: the user's entry point to everything that is not a DVC stage
(the stages run through `dvc repro`, or the Prefect flow).

    finetune check-params [--params FILE]    validate params without running a stage
"""
from __future__ import annotations

import argparse
import sys

from finetuning.config import PARAMS_FILE, load_config
from finetuning.errors import USER_ERRORS


def check_params(args: argparse.Namespace) -> int:
    """Load and validate a params file as every stage does (the Prefect flow runs this
    before DVC touches any output)."""
    load_config(args.params)
    print(f"{args.params} is valid")
    return 0


def add_check_params(commands: argparse._SubParsersAction) -> None:
    """`finetune check-params`."""
    parser = commands.add_parser(
        "check-params", help="validate params.yaml as the stages would, without running one",
        description=check_params.__doc__)
    parser.add_argument("--params", default=PARAMS_FILE,
                        help="params file to check (default: %(default)s)")
    parser.set_defaults(run=check_params)


def build_parser() -> argparse.ArgumentParser:
    """The command line, one subcommand per task."""
    parser = argparse.ArgumentParser(
        prog="finetune", description="Use a fine-tuned text classifier and the pipeline "
        "around it. The pipeline's stages run with `dvc repro`; see README.md.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_check_params(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `finetune` (and `python -m finetuning`); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
