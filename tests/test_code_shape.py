"""Size limits that keep each module to one job and each function readable on one screen, and no
lab diary in the code: files <= 600 lines, functions <= 80 lines (Triton kernels excepted: a
kernel is one fused loop and splitting it costs registers), no experiment numbers, references to
files outside the repository, or remarks about how GPU runs were scheduled."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
# The Triton attention kernel: its fused forward and backward kernels live in one file.
FILE_EXCEPTIONS = {"roo_ref/kernels/hstu_attention.py"}
DIARY = re.compile(r"exp\. [0-9]|DESIGN\.md|device[ ]time|device[ ]call")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.split() if (ROOT / p).exists()]


def _is_triton_kernel(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("jit" in ast.unparse(d) for d in fn.decorator_list)


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_triton_kernel(node):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {n} lines")
    return out


def test_files_are_at_most_600_lines():
    too_long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in tracked("*.py")
        if str(p.relative_to(ROOT)) not in FILE_EXCEPTIONS
        and (n := p.read_text(encoding="utf-8").count("\n")) > MAX_FILE_LINES
    ]
    assert too_long == []


def test_functions_are_at_most_80_lines():
    assert [f for p in tracked("*.py") for f in long_functions(p)] == []


def test_checker_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    f = ROOT / "tests" / f"_tmp_shape_{tmp_path.name}.py"
    f.write_text(f"def long():\n{body}\n\n\n@triton.jit\ndef kernel():\n{body}\n")
    try:
        assert [s.split(" ", 1)[1] for s in long_functions(f)] == [f"long is {MAX_FUNCTION_LINES + 1} lines"]
    finally:
        f.unlink()


def test_no_lab_diary_in_code_scripts_or_sweeps():
    hits = []
    for p in tracked("*.py", "*.sh", "*.toml"):
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if DIARY.search(line):
                hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert hits == []
