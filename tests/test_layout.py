"""The house rules of the code's layout, checked on the source: stage entry points are
leaves, modules and functions stay small, the flow speaks to DVC through its CLI only."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.imports import ROOT, imported_modules

LIBRARY_AND_STAGES = sorted([*(ROOT / "finetuning").rglob("*.py"),
                             *(ROOT / "stages").glob("*.py"),
                             *(ROOT / "flows").glob("*.py")])
EVERY_MODULE = sorted([*LIBRARY_AND_STAGES, *(ROOT / "benchmarks").glob("*.py"),
                       *(ROOT / "tests").glob("*.py"), *(ROOT / "scripts").glob("*.py")])
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
MAX_STAGE_LINES = 100


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", EVERY_MODULE, ids=relative)
def test_nothing_imports_a_stage(path):
    """Stages are leaves: what one needs from another lives in the library."""
    stages = [name for name in imported_modules(path) if name.split(".")[0] == "stages"]
    assert not stages, f"{relative(path)} imports {stages}"


@pytest.mark.parametrize("path", LIBRARY_AND_STAGES, ids=relative)
def test_modules_and_functions_stay_small(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    limit = MAX_STAGE_LINES if path.parent.name == "stages" else MAX_MODULE_LINES
    assert len(lines) <= limit, f"{relative(path)} has {len(lines)} lines (at most {limit})"
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, \
                f"{relative(path)}:{node.lineno} {node.name}() has {length} lines"


def test_every_stage_in_dvc_yaml_has_a_thin_entry_point():
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]:
        source = (ROOT / "stages" / f"{stage}.py").read_text(encoding="utf-8")
        assert "def main(" in source and "run_stage(" in source, stage


@pytest.mark.parametrize("path", sorted((ROOT / "flows").glob("*.py")), ids=relative)
def test_the_flow_uses_dvc_only_through_its_command_line(path):
    """No `import dvc...` at all (private modules, or the Repo API), no model code."""
    banned = [name for name in imported_modules(path)
              if name.split(".")[0] in ("dvc", "finetuning", "stages", "torch", "transformers")]
    assert not banned, f"{relative(path)} imports {banned}"


def test_every_package_says_what_lives_there():
    for init in (ROOT / "finetuning").rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), relative(init)
