"""The import rules of docs/ARCHITECTURE.md: no cycles between the package's modules, and no
module importing from a higher layer."""

import ast
import collections
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lateint_jax"

# docs/ARCHITECTURE.md, "Which module may import which": prefix -> layer, longest prefix wins.
LAYERS = {
    "errors": 1, "shapes": 1, "compilations": 1, "scoring": 1, "losses": 1, "sharding": 1,
    "outputs": 1, "pooling": 1,
    "models": 2, "codec": 2, "data": 2,
    "convert": 3, "encoders": 3,
    "index": 4,
    "index_model": 5, "eval": 5,
    "training": 6,
    "serving": 7,
    "commands": 8, "cli": 8, "__main__": 8, "": 8,
}  # fmt: skip


def module_files() -> dict[str, Path]:
    """Module name ("index.plaid") -> its file, for every module ("" is the package itself)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file)."""
    modules = module_files()
    graph = collections.defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from lateint_jax import shapes` imports the module shapes, not the package
                named = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t for t in named if t.removeprefix("lateint_jax.") in modules]
                targets = targets or [node.module]
            else:
                continue
            for target in targets:
                if target == "lateint_jax" or target.startswith("lateint_jax."):
                    short = target.removeprefix("lateint_jax").removeprefix(".")
                    if short in modules and short != name:
                        graph[name].add(short)
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    for size in range(len(parts), -1, -1):
        prefix = ".".join(parts[:size])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"module {module!r} has no layer in LAYERS (docs/ARCHITECTURE.md)")


def test_no_module_imports_from_a_higher_layer():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_index_package_never_imports_the_encoders():
    graph = import_graph()
    offenders = [m for m in graph if m.startswith("index.") and "encoders" in graph[m]]
    assert not offenders, offenders


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(module_files()):
        if module not in state:
            visit(module, [module])
