"""The shape the packages keep (docs/ARCHITECTURE.md): no import cycle among media modules
(nor among them and the watermark core's), the media plane never imports the control
plane, the watermark core imports neither the control plane nor recorder/ (its users), and
no product code imports the load test, benchmarks or tests. Imports inside functions count
(they hide a cycle, they do not remove it); so do imports under `if TYPE_CHECKING:` for the
cycle checks (a cycle only in type hints is still two modules that cannot be read apart),
but not for the layering checks, which are about what runs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("media", "signalling", "recorder", "annotate", "i18n", "webhooks", "metrics", "watermark")
NOT_PRODUCT = ("loadtest", "tests")
CONTROL_PLANE = ("signalling", "webhooks", "metrics")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path, *, type_hints: bool = False) -> set[str]:
    """Absolute names of the modules `path` imports when it runs (and for type hints, if asked)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test) and not type_hints:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from . import x`: a module
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def sources(*packages: str) -> dict[str, Path]:
    return {module_name(p): p for package in packages for p in (ROOT / package).rglob("*.py")}


def cycles_among(modules: dict[str, Path]) -> list[list[str]]:
    graph = {name: {m for m in runtime_imports(path, type_hints=True) if m in modules and m != name}
             for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    return cycles


def test_media_modules_import_each_other_without_a_cycle():
    assert cycles_among(sources("media")) == []


def test_media_and_watermark_modules_import_each_other_without_a_cycle():
    """media/ imports the watermark core and the core borrows media.fonts: never in a circle."""
    assert cycles_among(sources("media", "watermark")) == []


def test_the_media_plane_never_imports_the_control_plane():
    offenders = {name: sorted(m for m in runtime_imports(path) if m.split(".")[0] in CONTROL_PLANE)
                 for name, path in sources("media").items()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_watermark_core_never_imports_the_control_plane_or_recorder():
    """recorder/ and signalling/ import the core; it works on what they hand it (watermark/__init__.py)."""
    offenders = {name: sorted(m for m in runtime_imports(path) if m.split(".")[0] in CONTROL_PLANE + ("recorder",))
                 for name, path in sources("watermark").items()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_product_code_never_imports_load_tests_benchmarks_or_tests():
    modules = {**sources(*PRODUCT), "run": ROOT / "run.py"}
    offenders = {name: sorted(m for m in runtime_imports(path)
                              if m.split(".")[0] in NOT_PRODUCT or "bench" in m.rsplit(".", 1)[-1])
                 for name, path in modules.items()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_relative_function_level_and_type_only_imports(tmp_path, monkeypatch):
    """The checks above would pass vacuously if the walker missed imports."""
    package = tmp_path / "media"
    package.mkdir()
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom .b import thing\nif TYPE_CHECKING:\n    from .c import Hint\n"
        "def later():\n    from media.d import x\n    import loadtest.client\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = runtime_imports(package / "a.py")
    assert {"media.b", "media.d", "loadtest.client"} <= found
    assert not any(m.startswith("media.c") for m in found)
    assert "media.c" in runtime_imports(package / "a.py", type_hints=True)
