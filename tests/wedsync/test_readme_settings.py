"""The README's table of settings names every environment variable the product reads.

Two independent ways find what is read, so that neither can miss a variable silently: a static scan
of every product module for calls to ``wedsync/env.py``'s readers (and ``os.environ`` reads), which
refuses any name that is not a literal, and a run of the settings module in a subprocess, in the
embedded and the production profile, with the readers wrapped to record every name they are asked for.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import wedsync.env
from tests.wedsync.test_settings import ROOT, _production_env, _start_with

PRODUCT_PACKAGES = ("wedsync", "realtime", "presence", "monitoring")
# The readers call one another with the caller's name; the test profile writes the environment.
NOT_SCANNED = {Path("wedsync/env.py"), Path("wedsync/settings_test.py")}
# Files outside the product packages that read variables themselves (shell, make, the test run).
OTHER_READERS = ("Makefile", "Procfile", "bin", ".ci", "tests/conftest.py")
# Written by the entry points for Django, never read to configure the product.
NOT_SETTINGS = frozenset({"DJANGO_SETTINGS_MODULE"})
NAME = re.compile(r"[A-Z][A-Z0-9_]*")

HELPERS = frozenset(name for name, value in vars(wedsync.env).items() if name.startswith("env_") and callable(value))

# Wraps every reader before the settings module imports them, and prints the names asked for.
RECORDER = """
import json
import wedsync.env as env
seen = set()
def recording(reader):
    def read(name, *args, **kwargs):
        seen.add(name)
        return reader(name, *args, **kwargs)
    return read
for helper in [n for n in vars(env) if n.startswith("env_") and callable(getattr(env, n))]:
    setattr(env, helper, recording(getattr(env, helper)))
import wedsync.settings
print(json.dumps(sorted(seen)))
"""


def _product_modules() -> Iterator[Path]:
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.relative_to(ROOT) not in NOT_SCANNED:
                yield path


def _is_os_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and _is_name(node.value, "os")


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _variable_named(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _reads(tree: ast.Module) -> Iterator[tuple[int, ast.expr | None]]:
    """Every read of a variable in one module: its line and the expression naming it."""
    readers = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "wedsync.env"
        for alias in node.names
        if alias.name in HELPERS
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = node.func
            is_reader = (isinstance(callee, ast.Name) and callee.id in readers) or (
                isinstance(callee, ast.Attribute) and callee.attr in HELPERS
            )
            is_getenv = isinstance(callee, ast.Attribute) and (
                (callee.attr == "get" and _is_os_environ(callee.value))
                or (callee.attr == "getenv" and _is_name(callee.value, "os"))
            )
            if is_reader or is_getenv:
                named = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
                yield node.lineno, named
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value) and isinstance(node.ctx, ast.Load):
            yield node.lineno, node.slice
        elif isinstance(node, ast.Compare) and any(_is_os_environ(right) for right in node.comparators):
            yield node.lineno, node.left  # "NAME" in os.environ


def _static_scan() -> tuple[set[str], list[str]]:
    names: set[str] = set()
    unnamed: list[str] = []
    for path in _product_modules():
        for line, named in _reads(ast.parse(path.read_text(), filename=str(path))):
            variable = _variable_named(named)
            if variable is None:
                unnamed.append(f"{path.relative_to(ROOT)}:{line}")
            else:
                names.add(variable)
    return names - NOT_SETTINGS, unnamed


def _readme_table() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        for token in re.findall(r"`([^`]+)`", row.split("|")[1]):
            assert NAME.fullmatch(token), f"README settings row names {token!r}: write each variable out in full"
            names.add(token)
    assert len(names) > 50, "the README's table of settings was not found under '## Configuration'"
    return names


def _recorded(env: dict[str, str]) -> set[str]:
    result = _start_with(env, "-c", RECORDER)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    var_dir = str(tmp_path_factory.mktemp("var"))
    embedded = _recorded({"WEDSYNC_VAR_DIR": var_dir})
    production = _recorded(
        {
            **_production_env(),
            "WEDSYNC_VAR_DIR": var_dir,
            "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "DATABASE_POOL_MAX_SIZE": "0",  # the pool off: DATABASE_CONN_MAX_AGE is read too
        }
    )
    return embedded | production


def test_every_reader_call_names_its_variable_literally() -> None:
    names, unnamed = _static_scan()
    assert not unnamed, f"variables read by a computed name, which no check can see: {unnamed}"
    assert {"DEBUG", "REALTIME_LISTEN_BACKLOG", "ASGI_THREADS"} <= names  # the scan finds what it should


def test_the_static_scan_sees_every_variable_the_settings_read(recorded: set[str]) -> None:
    names, _ = _static_scan()
    assert recorded - names == set(), "read through wedsync/env.py in a way the scan does not see: teach it"


def test_every_variable_read_is_in_the_readme_table(recorded: set[str]) -> None:
    names, _ = _static_scan()
    missing = sorted((names | recorded) - _readme_table())
    assert not missing, f"add these to README.md's table of settings (meaning, default, unit): {missing}"


def test_every_variable_in_the_readme_table_is_read_somewhere(recorded: set[str]) -> None:
    names, _ = _static_scan()
    others = [ROOT / other for other in OTHER_READERS]
    files = [path for other in others for path in ([other] if other.is_file() else sorted(other.rglob("*")))]
    elsewhere = " ".join(path.read_text() for path in files if path.is_file())
    stale = sorted(name for name in _readme_table() - names - recorded if not re.search(rf"\b{name}\b", elsewhere))
    assert not stale, f"README.md's table of settings names variables nothing reads: {stale}"
