"""Every function in ``src/`` longer than a limit, longest first: where a newcomer has to read too long
to see what one function does.

``python bench/long_functions.py`` lists those over 80 lines (``--limit N`` for another bound). A function's
length is from its ``def`` to its last line, as ``ast`` reports them (decorators left out: a CLI
command's options are declarations, not code to read); a nested function counts within its parent and on
its own.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LIMIT = 80


def long_functions(root: Path, limit: int) -> Iterator[tuple[int, str, str]]:
    """(lines, file:line, qualified name) of each function over ``limit`` lines under ``root``."""
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), rel)
        yield from _walk(tree, rel, limit, "")


def _walk(node: ast.AST, rel: str, limit: int, prefix: str) -> Iterator[tuple[int, str, str]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (child.end_lineno or child.lineno) - child.lineno + 1
            name = f"{prefix}{child.name}"
            if lines > limit:
                yield lines, f"{rel}:{child.lineno}", name
            yield from _walk(child, rel, limit, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _walk(child, rel, limit, f"{prefix}{child.name}.")
        else:
            yield from _walk(child, rel, limit, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=LIMIT)
    args = parser.parse_args()
    found = sorted(long_functions(SRC, args.limit), reverse=True)
    for lines, where, name in found:
        print(f"{lines:5d}  {where:50s}  {name}")
    print(f"{len(found)} functions over {args.limit} lines")


if __name__ == "__main__":
    main()
