"""The JS client's unit tests (tests/js/, Node's own runner) as part of the suite: backoff, dedupe,
the offline queue, resume bookkeeping, and the client against an in-process fake server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[2]


def test_node_test_runner_passes(not_run: Callable[[str, str], NoReturn]) -> None:
    node = shutil.which("node")
    if node is None:
        not_run("Node.js", "`node` is not on PATH")
    if not (ROOT / "node_modules" / "terser").is_dir():
        not_run("npm packages", "node_modules/ is missing: `make test` runs `npm ci` first")
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "client minified:" in result.stdout  # the size budget ran, not only the logic
