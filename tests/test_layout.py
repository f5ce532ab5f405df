"""The package's layout: no import cycles (imports inside functions counted), and the resize
policy interpreted in one place."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unet_tf"


def _modules() -> dict:
    """Dotted module name -> path of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict:
    """Module -> the package's modules it imports, at the top or inside functions. `from P import
    name` leads to P.name when that is a module, else to P (its __init__ runs the import). The
    package's own __init__ (which only registers the Keras objects) is left out: every module
    passes through it."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                                else base)
        graph[name] = {t for t in targets if t in modules and t not in (name, "unet_tf")}
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle_and_no_false_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "unet_tf.data.sources" in graph["unet_tf.data"]  # the graph sees package imports
    assert cycles(graph) == []


RESIZE_COMPARED = re.compile(r"\bresize\s*(==|!=|\bin\b|\bnot in\b)\s*[\"'({\[]")


def test_resize_is_compared_to_a_string_only_where_it_is_declared_and_interpreted():
    comparing = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                       if RESIZE_COMPARED.search(path.read_text()))
    assert RESIZE_COMPARED.search('if config.resize == "none":')  # the pattern finds one
    assert set(comparing) <= {"config.py", "data/policy.py"}, comparing
