"""A stage that SIGKILLs itself in the middle of committing its outputs, right after the
first one landed: `python -m tests.kill_between_outputs <stage> --params FILE`, launched
by test_outputs as a user's stage run that dies at the worst moment."""
import os
import runpy
import signal
import sys

real_replace = os.replace


def replace_then_die(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if ".tmp-" in os.path.basename(src) and not str(dst).endswith(".commit.json"):
        os.kill(os.getpid(), signal.SIGKILL)  # one output moved into place, the rest not


if __name__ == "__main__":
    stage = sys.argv.pop(1)
    os.replace = replace_then_die
    runpy.run_module(f"stages.{stage}", run_name="__main__", alter_sys=True)
