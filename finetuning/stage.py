"""The thin entry point every stage shares: logging, `--params`, clean user errors."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from finetuning.config import PARAMS_FILE, load_config
from finetuning.errors import USER_ERRORS
from finetuning.outputs import recover

log = logging.getLogger("finetuning.stage")


def setup_logging() -> None:
    """Timestamped log lines on standard error (standard output stays for data)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def stage_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The command line every stage shares: `--params`."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=description)
    parser.add_argument("--params", default=PARAMS_FILE,
                        help="params file to read (default: %(default)s)")
    return parser


def run_stage(name: str, description: str, body: Callable[..., None],
              argv: list[str] | None = None, offline: bool = True,
              parser: argparse.ArgumentParser | None = None) -> None:
    """Parse the common arguments, load params, run `body(config)`; exit 1 with one clear
    line on a user error (bad params, bad input) instead of a traceback. A stage with
    options of its own passes its `stage_parser` as `parser` and gets `body(config, args)`.

    Every stage but fetch runs with the Hugging Face Hub switched off (for anything
    imported from here on; the library's own loaders read local folders only): after
    fetch, nothing may touch the network.
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    args = (parser or stage_parser(name, description)).parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.params)
        recover(vars(cfg.paths).values())  # a stage killed mid-commit: finish its outputs
        body(cfg, args) if parser else body(cfg)
    except USER_ERRORS as err:
        log.error("%s failed: %s", name, err)
        sys.exit(1)
