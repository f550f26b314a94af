"""No import cycle inside vidseg_nb (issue 11): every import statement, module-level or inside a function
(a lazy import is still a dependency), resolved to vidseg_nb modules, forms an acyclic graph."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vidseg_nb"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != mod and t.startswith("vidseg_nb"):
                    graph[mod].add(t)
    # a package's __init__ that only re-exports lazily (importlib) adds no edges; an explicit one does
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_package():
    g = import_graph()
    assert len(g) > 10 and "vidseg_nb.pipeline" in g
    assert "vidseg_nb.features" in g["vidseg_nb.pipeline"]  # the walker sees real edges
    assert cycles(g) == []


def test_every_name_taken_from_the_video_package_is_exported():
    """``vidseg_nb.video`` is a package by concern (clip, reading, sizing, writing, labels); each public name
    that code anywhere in the repository takes ``from vidseg_nb.video import ...`` is in its ``__all__``,
    and no one takes a private name from the package (private names live in, and are taken from, their
    module)."""
    import vidseg_nb.video as video

    root = PKG.parent
    files = [
        p for d in ("vidseg_nb", "demo", "tests", "benchmarks", "scripts") for p in (root / d).rglob("*.py")
    ]
    files += sorted((root / "notebooks").glob("*.py"))
    taken: dict[str, str] = {}
    for path in files:
        mod = _module_name(path) if path.is_relative_to(PKG) else ""
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(mod, path.name == "__init__.py", node) if node.level else node.module
                if base == "vidseg_nb.video" and path.parent != PKG / "video":
                    for a in node.names:
                        taken[a.name] = f"{path.relative_to(root)}:{node.lineno}"
    assert {"read_video", "resize_labels", "LabelPNGWriter"} <= set(taken)  # the walk sees the users
    missing = {n: w for n, w in taken.items() if n not in video.__all__}
    assert not missing, f"taken from vidseg_nb.video but not exported there: {missing}"
    assert all(hasattr(video, n) for n in video.__all__)
