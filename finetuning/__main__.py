"""`python -m finetuning` is the `finetune` command."""
import sys

from finetuning.cli import main

sys.exit(main())
