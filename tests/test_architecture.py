"""The shape of the code: small functions and modules, imports that flow one way, types that
check. These hold the layout that docs/architecture.md describes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bot"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
# what the core may never import: it talks to Matrix, the CLI and the wiring through ports
OUTER = ("bot.matrix", "bot.cli", "bot.app", "bot.demo", "bot.ops")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Modules of the package imported at run time (not only for type checking)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    known = modules()
    return {module for module in found if module in known and module != name}


def test_no_function_over_60_lines_and_no_module_over_400():
    long_functions, long_modules = [], []
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(source.splitlines())}")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length}")
    assert not long_functions, long_functions
    assert not long_modules, long_modules


def test_imports_flow_one_way_without_circles():
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    for name, imported in graph.items():
        if name.startswith("bot.core"):
            assert not [m for m in imported if m.startswith(OUTER)], (name, imported)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name) :], name])
        visiting.append(name)
        for other in graph[name]:
            visit(other)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_types_check():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "bot"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_what_only_some_deployments_use_is_not_loaded_at_start():
    """Memory is mostly modules loaded: document parsers run in their worker process, vectors
    only with an embeddings server, export formats only when exporting, httpx only for files
    and remote moderation or retrieval servers; nio's crypto library and its HTTP client serve
    cross-signing and key backup too."""
    loaded_later = [
        "numpy",
        "docx",
        "lxml",
        "pypdfium2",
        "snowballstemmer",
        "bot.rag.extract",
        "bot.export.formats",
        "cryptography",
        "multiprocessing",
        "httpx",
        "matplotlib",  # `!lucie stats`' chart draws with it, imported with the first chart
    ]
    probe = f"import sys, bot.cli, bot.app; print([m for m in {loaded_later} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
