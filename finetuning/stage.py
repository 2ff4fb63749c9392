"""The thin entry point every stage shares: logging, `--params`, clean user errors."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from finetuning.config import PARAMS_FILE, Config, load_config
from finetuning.errors import USER_ERRORS

log = logging.getLogger("finetuning.stage")


def setup_logging() -> None:
    """Timestamped log lines on standard error (standard output stays for data)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_stage(name: str, description: str, body: Callable[[Config], None],
              argv: list[str] | None = None, offline: bool = True) -> None:
    """Parse the common arguments, load params, run `body`; exit 1 with one clear line on
    a user error (bad params, bad input) instead of a traceback.

    Every stage but fetch runs with the Hugging Face Hub switched off (for anything
    imported from here on; the library's own loaders read local folders only): after
    fetch, nothing may touch the network.
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=description)
    parser.add_argument("--params", default=PARAMS_FILE,
                        help="params file to read (default: %(default)s)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        body(load_config(args.params))
    except USER_ERRORS as err:
        log.error("%s failed: %s", name, err)
        sys.exit(1)
