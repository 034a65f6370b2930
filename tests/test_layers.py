"""The layers of docs/architecture.md hold: no module of ``app/`` imports one of a higher layer.

Every module belongs to exactly one layer, named by its package or module path; a new module
must be placed (the test fails on one nobody placed). Within a layer, imports go either way.
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# Lowest first, as docs/architecture.md draws them.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "plumbing",
        (
            "app",
            "app.config",
            "app.db",
            "app.errors",
            "app.statements",
            "app.locks",
            "app.deadlines",
            "app.logs",
            "app.metrics",
            "app.timestamps",
            "app.vocabulary",
            "app.hours",
            "app.flags",
        ),
    ),
    ("models", ("app.models",)),
    ("rules and the replica", ("app.rules", "app.replica")),
    ("services", ("app.auth", "app.privacy", "app.queues", "app.intake", "app.webhooks")),
    (
        "top",
        (
            "app.api",
            "app.console",
            "app.cli",
            "app.main",
            "app.scheduler",
            "app.services",
            "app.health",
            "app.collectors",
            "app.demo",
            "app.embedded",
        ),
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of the longest prefix that names the module (``app`` alone: the package)."""
    best: tuple[int, int] | None = None
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            names = module == prefix or (prefix != "app" and module.startswith(prefix + "."))
            if names and (best is None or len(prefix) > best[0]):
                best = (len(prefix), level)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: place it in tests/test_layers.py")
    return best[1]


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "app":
                found.update(f"app.{alias.name}" for alias in node.names)
            elif node.module.startswith("app."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("app"))
    return found


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for path in sorted(APP.rglob("*.py")):
        module = module_name(path)
        level = layer_of(module)
        for imported in sorted(imports_of(path)):
            if layer_of(imported) > level:
                upward.append(
                    f"{module} ({LAYERS[level][0]}) imports {imported}"
                    f" ({LAYERS[layer_of(imported)][0]})"
                )
    assert upward == []


def test_the_layers_are_the_ones_the_architecture_names() -> None:
    text = (APP.parent / "docs" / "architecture.md").read_text()
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix != "app":
                assert prefix.removeprefix("app.") in text, f"{prefix} is not in architecture.md"
