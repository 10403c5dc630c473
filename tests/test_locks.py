"""The locks say what the inputs say: every pin a person wrote in requirements.txt or
requirements-dev.txt is in its lock at that version, and the dev lock installs the runtime lock's
exact files. Editing an input without `make lock` fails here, not on someone's fresh machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _logical_lines(path: Path) -> list[str]:
    """The file's requirement lines, continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def _inputs(path: Path) -> dict[str, str]:
    """name -> pinned version, following ``-r`` includes."""
    pins: dict[str, str] = {}
    for line in _logical_lines(path):
        if line.startswith("-r "):
            pins.update(_inputs(path.parent / line.split(None, 1)[1]))
            continue
        requirement = Requirement(line)
        [specifier] = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {line} is not pinned with =="
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def _lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes)."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    for line in _logical_lines(path):
        requirement, *options = line.split(" --hash=")
        parsed = Requirement(requirement.strip())
        [specifier] = parsed.specifier
        assert specifier.operator == "==", f"{path.name}: {requirement} is not pinned with =="
        hashes = frozenset(option.strip() for option in options)
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{path.name}: {requirement} has no hash"
        entries[canonicalize_name(parsed.name)] = (specifier.version, hashes)
    return entries


@pytest.mark.parametrize(
    ("inputs", "lock"), [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")]
)
def test_every_pin_a_person_wrote_is_locked_at_that_version(inputs: str, lock: str) -> None:
    locked = {name: version for name, (version, _) in _lock(ROOT / lock).items()}
    stale = {name: (version, locked.get(name)) for name, version in _inputs(ROOT / inputs).items()}
    stale = {name: versions for name, versions in stale.items() if versions[0] != versions[1]}
    assert not stale, f"{inputs} and {lock} disagree (wanted, locked): {stale}; run `make lock`"


def test_the_dev_lock_installs_the_runtime_lock_exactly() -> None:
    runtime, dev = _lock(ROOT / "requirements.lock"), _lock(ROOT / "requirements-dev.lock")
    differ = {name: (entry, dev.get(name)) for name, entry in runtime.items() if dev.get(name) != entry}
    assert not differ, f"runtime packages the dev lock pins otherwise: {sorted(differ)}; run `make lock`"
