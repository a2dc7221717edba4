"""The layout rules of docs/architecture.md, checked on the source: a change that breaks one fails here.

- imports go one way: ``securegaze`` never imports ``edge_app`` or Qt;
- no import circle between the project's modules, counting imports inside functions (a package's
  ``__init__`` that re-exports its own modules is not a circle through them);
- no module imports another module's private (underscore) name;
- every file is short enough to read in one sitting (450 lines), except the ones named here with why.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("securegaze", "edge_app")
MAX_LINES = 450
#: Files allowed past MAX_LINES, and why. Empty: none is.
LONG_FILES: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The project module that ``name`` (a module or a name inside one) resolves to."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every absolute import in the file, at any depth,
    except those under ``if TYPE_CHECKING:`` (read by type checkers, never run)."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for _, module, names in _imports(path):
            targets = [_owner(f"{module}.{n}") for n in names] or [_owner(module)]
            deps.update(t for t in targets if t and t != name)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_the_library_never_imports_the_app_or_qt():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for name, path in MODULES.items() if name.startswith("securegaze")
                 for line, module, _ in _imports(path) if module.split(".")[0] in ("edge_app", "PyQt6", "PySide6")]
    assert offenders == []


def test_no_module_imports_another_modules_private_names():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {n} from {module}"
                 for path in [*MODULES.values(), *sorted((ROOT / "tests").glob("*.py")),
                              *sorted((ROOT / "benchmarks").glob("*.py"))]
                 for line, module, names in _imports(path) if module.split(".")[0] in PACKAGES
                 for n in names if n.startswith("_") and not n.startswith("__")]
    assert offenders == []


@pytest.mark.parametrize("package", PACKAGES)
def test_files_are_short_enough_to_read(package):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert set(long) <= set(LONG_FILES), f"over {MAX_LINES} lines: {long}"
