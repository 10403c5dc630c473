"""Import boundaries that keep circles out: the event log knows nothing of emergencies (presence
registers its publish gate instead), and the escalation service queues its task by name."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_realtime_imports_nothing_of_emergencies() -> None:
    offending = {
        str(path.relative_to(ROOT)): sorted(m for m in _imported_modules(path) if m.startswith("presence.emergency"))
        for path in (ROOT / "realtime").rglob("*.py")
    }
    assert {path: modules for path, modules in offending.items() if modules} == {}


def test_the_escalation_service_does_not_import_its_tasks() -> None:
    modules = _imported_modules(ROOT / "monitoring" / "services" / "escalation.py")
    assert not any(m == "monitoring.tasks" or m.startswith("monitoring.tasks.") for m in modules)
