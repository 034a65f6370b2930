"""The product code uses no library's private names (issue 10): an attribute with a leading
underscore is reached only on the code's own objects (``self``, ``cls``) or is one of
namedtuple's documented methods, whose underscore only avoids clashing with field names."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
NAMEDTUPLE_API = {"_make", "_asdict", "_replace", "_fields"}


def test_no_private_names_of_other_code() -> None:
    found = []
    for path in sorted(APP.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in NAMEDTUPLE_API:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{path.relative_to(APP.parent)}:{node.lineno} .{name}")
    assert not found, found
