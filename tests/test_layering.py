"""The stages import downward only, and no two modules import each other.

    workloads  <-  roo_ref  <-  reports (roo_ref's cost layer only)  <-  harness  <-  harness.commands

Every import statement counts, including those inside functions: a lazy import is still a
dependency. The checker is tested on a planted upward import and a planted cycle, so it can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workloads", "roo_ref", "reports", "harness", "benchmarks")

# (importer prefix, imported prefix) pairs that are allowed; the first matching importer rule wins.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("workloads", ("workloads",)),
    ("roo_ref", ("workloads", "roo_ref")),
    ("reports", ("workloads", "reports", "roo_ref.cost", "roo_ref.hardware")),
    ("harness.commands", PACKAGES),
    ("harness.cli", PACKAGES),
    ("harness", ("workloads", "roo_ref", "reports", "harness")),
    ("benchmarks", ("workloads", "roo_ref", "reports", "harness", "benchmarks")),
]
# Only the CLI layer (the entry point and its command modules) may import the command modules.
CLI = "harness.commands"
CLI_LAYER = ("harness.commands", "harness.cli", "harness.__main__")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Our modules that `path` imports (absolute and relative imports, at any depth)."""
    me = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = me.split(".") if is_pkg else me.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # `from pkg import mod` may name a submodule: count both candidates
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def graph(root: Path) -> dict[str, set[str]]:
    mods = {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    g: dict[str, set[str]] = {}
    for name, path in mods.items():
        # keep only edges to modules that exist (a `from pkg import function` is an edge to pkg)
        g[name] = {t for t in imports_of(path, root) if t in mods and t != name}
    return g


def violations(g: dict[str, set[str]]) -> list[str]:
    out = []
    for src, targets in sorted(g.items()):
        allowed = next((a for p, a in RULES if _under(src, p)), None)
        if allowed is None:
            continue
        for t in sorted(targets):
            if not any(_under(t, a) for a in allowed):
                out.append(f"{src} imports {t} (allowed: {', '.join(allowed)})")
            elif _under(t, CLI) and not any(_under(src, c) for c in CLI_LAYER):
                out.append(f"{src} imports the CLI module {t} (only harness.commands may)")
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _is_ancestor_package(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


def real_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Cycles, ignoring a package __init__ re-exporting its own submodules (package <-> child)."""
    pruned = {s: {t for t in ts if not _is_ancestor_package(s, t)} for s, ts in g.items()}
    return cycles(pruned)


def test_no_upward_import():
    assert violations(graph(ROOT)) == []


def test_no_import_cycle():
    assert real_cycles(graph(ROOT)) == []


@pytest.mark.parametrize(
    ("path", "source", "expect"),
    [
        (
            "roo_ref/costly.py",
            "def f():\n    from harness.devices import calibrate\n",
            "roo_ref.costly imports harness.devices",
        ),
        ("workloads/x.py", "import roo_ref.jagged\n", "workloads.x imports roo_ref.jagged"),
        ("reports/x.py", "from roo_ref.models import dlrm\n", "reports.x imports roo_ref.models"),
        (
            "benchmarks/x.py",
            "from harness.commands import cost\n",
            "benchmarks.x imports the CLI module harness.commands",
        ),
        ("harness/x.py", "from .commands import bench\n", "harness.x imports the CLI module harness.commands"),
    ],
)
def test_checker_catches_a_planted_upward_import(tmp_path, path, source, expect):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for mod in (
        "harness/devices.py",
        "roo_ref/jagged.py",
        "harness/commands/__init__.py",
        "harness/commands/cost.py",
        "harness/commands/bench.py",
        "roo_ref/models/__init__.py",
        "roo_ref/models/dlrm.py",
    ):
        (tmp_path / mod).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / mod).write_text("")
    (tmp_path / path).write_text(source)
    found = violations(graph(tmp_path))
    assert any(v.startswith(expect) for v in found), found


def test_checker_catches_a_planted_cycle(tmp_path):
    (tmp_path / "roo_ref").mkdir()
    (tmp_path / "roo_ref" / "__init__.py").write_text("")
    (tmp_path / "roo_ref" / "a.py").write_text("from roo_ref.b import g\n")
    (tmp_path / "roo_ref" / "b.py").write_text("def g():\n    from roo_ref import a\n")
    assert real_cycles(graph(tmp_path)) == [["roo_ref.a", "roo_ref.b"]]
