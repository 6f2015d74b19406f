"""kaelab as a library: no import circle anywhere in kaelab, every module imports on its own, first,
in a fresh interpreter, and no function is longer than a screen (80 lines).

The graph counts every import statement, also those inside functions: a lazy import hides a circle
from the import machinery but still ties the two modules together (neither is usable alone)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kaelab", "hydra_plugins")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages under ``root``."""
    mods = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def imported_modules(path: Path, module: str, mods: dict[str, Path]) -> set[str]:
    """The modules of ``mods`` that the file's import statements name: ``import a.b`` -> a.b,
    ``from a import b`` -> a.b if that is a module, else a (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    deps = set()
    for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            deps.update(alias.name for alias in node.names if alias.name in mods)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                deps.add(name if name in mods else base)
    return {d for d in deps if d in mods and d != module}


def runtime_nodes(node: ast.AST):
    """Every node under ``node`` but those in the body of ``if TYPE_CHECKING:`` (imports for
    annotations only, never run: the way to name a type of a module that imports this one)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for other in child.orelse:
                yield other
                yield from runtime_nodes(other)
            continue
        yield child
        yield from runtime_nodes(child)


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports, anywhere in the file."""
    mods = module_files(root, packages)
    return {module: imported_modules(path, module, mods) for module, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a -> b -> ... -> a), or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_sees_a_circle_through_a_lazy_import(tmp_path):
    """Catches a graph that reads only module-level imports (the errors <-> aggregate circle went through
    an import inside a method) or misses ``from pkg import module`` and relative imports."""
    pkg = tmp_path / "kaelab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from kaelab.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("def f():\n    from kaelab.a import g\n")
    graph = import_graph(tmp_path, ("kaelab",))
    assert graph["kaelab.a"] == {"kaelab.sub.b"} and graph["kaelab.sub.b"] == {"kaelab.sub.c"}
    assert find_cycle(graph) == ["kaelab.a", "kaelab.sub.b", "kaelab.sub.c", "kaelab.a"]
    # an annotation-only import is no circle; anything else under `if` is
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import kaelab.a\n")
    assert find_cycle(import_graph(tmp_path, ("kaelab",))) is None
    (pkg / "sub" / "c.py").write_text("if TYPE_CHECKING:\n    pass\nelse:\n    import kaelab.a\n")
    assert find_cycle(import_graph(tmp_path, ("kaelab",))) == ["kaelab.a", "kaelab.sub.b", "kaelab.sub.c", "kaelab.a"]


def test_kaelab_has_no_import_circle():
    """Catches any module pair (or longer chain) of kaelab that imports each other, lazily or not."""
    graph = import_graph(REPO)
    assert "kaelab.errors" in graph and "kaelab.aggregate" in graph["kaelab.run_guard"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_kaelab_errors_imports_no_other_kaelab_module():
    """Catches errors.py growing a kaelab import again: every module imports it, so it must be a leaf."""
    assert import_graph(REPO)["kaelab.errors"] == set()


IMPORT_EACH_FIRST = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("kaelab", "hydra_plugins")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{name}: {type(err).__name__}: {err}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first_on_its_own():
    """Catches a module that imports only after another one did (a circle resolved by the import order
    of one entry point, or a missing import) and one whose import fails: each module is imported with
    no kaelab module loaded, in one fresh interpreter (third-party modules stay loaded, for speed)."""
    names = [m for m in module_files(REPO) if not m.endswith("__main__")] + ["kaelab.__main__"]
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_FIRST, *names], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


MAX_FUNCTION_LINES = 80


def long_functions(root: Path = REPO, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (n lines)`` of every function or method in kaelab/ longer than ``limit``."""
    out = []
    for path in sorted((root / "kaelab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_in_kaelab_is_longer_than_a_screen():
    """Stages are thin compositions of the API: catches a stage or helper grown past 80 lines."""
    assert long_functions() == []


def test_the_length_check_sees_a_long_function(tmp_path):
    (tmp_path / "kaelab").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    (tmp_path / "kaelab" / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path) == ["kaelab/m.py:5 long (86 lines)"]
