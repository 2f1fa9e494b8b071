"""The package map of docs/ARCHITECTURE.md, checked: imports only go downwards (function-level imports included,
so a cycle cannot hide inside a function), no module-level cycle, and no long function without a stated reason."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "chatbot"

# Lowest first. A module may import from its own layer's package and from lower layers only; within one layer
# packages may import each other only if that keeps the module graph acyclic (checked below).
LAYERS: list[set[str]] = [
    {"errors", "portable", "fsio", "lock", "security", "crypto", "tokens", "records", "config", "device"},
    {"formats"},  # on-disk formats: read by every stage above, written by kakao (manifest) and data (processed)
    {"kakao"},
    {"model", "base"},
    {"data"},
    {"infer"},
    {"eval"},
    {"train"},
    {"artifact"},
    {"bridge", "serve"},
    {"status", "demo", "ops", "__main__"},
]
LONG_LINES = 80
LONG_MARK = "# long-function:"   # put on the line(s) just above the def, followed by why it stays long

def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """chatbot modules imported anywhere in the file (module level and inside functions), as names under chatbot."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("chatbot"):
                target = node.module.removeprefix("chatbot").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("chatbot.") for a in node.names if a.name.startswith("chatbot.")}
    return {m for m in found if m and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items() if name}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"chatbot.{top} is in no layer of tests/test_structure.py: add it (and to ARCHITECTURE.md)")


def test_every_import_goes_downwards() -> None:
    upward = set()
    for module, deps in _graph().items():
        for dep in deps:
            if _layer(dep) > _layer(module):
                upward.add((module, dep))
    assert not upward, f"imports against the layer order: {sorted(upward)}"


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_long_functions_say_why() -> None:
    unexplained = []
    for name, path in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.end_lineno - node.lineno + 1 <= LONG_LINES:
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            above = lines[max(0, first - 4): first - 1]
            qualified = f"{name}.{node.name}"
            if not any(LONG_MARK in line for line in above):
                unexplained.append(f"{qualified} ({node.end_lineno - node.lineno + 1} lines)")
    assert not unexplained, f"functions over {LONG_LINES} lines without a '{LONG_MARK}' comment: {unexplained}"


def test_config_parameters_are_typed() -> None:
    """A ``cfg`` parameter says which config it is (Config or one of its sections), so readers need not guess."""
    untyped = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                untyped += [f"{name}.{node.name}" for a in params if a.arg == "cfg" and a.annotation is None]
    assert not untyped, f"untyped cfg parameters: {untyped}"


def test_the_checks_see_a_planted_cycle_and_upward_import(tmp_path: Path) -> None:
    """The walkers must find imports hidden inside functions, or the checks above could never fail."""
    (tmp_path / "a.py").write_text("def f():\n    from .b import x\n", encoding="utf-8")
    modules = {"infer.a": tmp_path / "a.py", "infer.b": tmp_path / "b.py"}
    assert _imports("infer.a", tmp_path / "a.py", modules) == {"infer.b"}
    assert _layer("artifact.publish") > _layer("infer.loading") > _layer("formats.x") > _layer("errors")
