"""Where a report comes from: the git commit and the machine."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def git_state(outputs: list[str], cwd: str | Path | None = None) -> str:
    """Short HEAD commit of the checkout at `cwd` (default: here), marked dirty when
    tracked files other than the pipeline's own git-tracked outputs differ from it;
    "unknown" outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              timeout=30, cwd=cwd).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      *(f":(exclude){path}" for path in outputs))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (dirty: uncommitted changes)" if changed else head


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware() -> dict[str, str]:
    """The machine making the report: CPU, cores, torch, GPU."""
    import torch  # here, not at import: the card and report stages need it only for this

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"CPU": cpu_model(), "CPU cores": str(os.cpu_count()), "GPU": gpu,
            "torch": torch.__version__, "Python": platform.python_version()}
