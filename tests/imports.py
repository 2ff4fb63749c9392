"""Which of the project's own files a module imports, transitively (what a stage's
dvc.yaml `deps:` must list): `from finetuning.x import y`, `import finetuning.x`, and
every package `__init__.py` on the way, found by reading the code, not by running it."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("finetuning", "stages", "flows")


def module_file(name: str) -> Path | None:
    """The file of a dotted module name inside the repository, if it is one of ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names a file imports (including `from pkg import submodule`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def with_parents(name: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`, `a.b.c`]: importing a module runs its packages' __init__."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def local_imports(module: str) -> set[str]:
    """Repository-relative paths of every file `module` runs when imported."""
    seen: set[Path] = set()
    todo = with_parents(module)
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            todo += with_parents(name)
    return {path.relative_to(ROOT).as_posix() for path in seen}
