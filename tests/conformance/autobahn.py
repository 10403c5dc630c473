"""The Autobahn testsuite's fuzzing client against the product's socket stack (decision 0020).

Installs the suite (Python 2.7 only) into ``.conformance/`` (ignored by git) on first use, runs its
fuzzing client against a daphne node that serves the test-only echo route
(:func:`tests.realtime.nodes.echo_node`), reads the JSON report, judges every case and renders the
summary kept in ``docs/conformance.md``. ``tests/conformance/test_autobahn.py`` runs it in
``make test``; ``make conformance`` runs :func:`main`, which also rewrites the summary.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE_FOLDER = ROOT / ".conformance"
REQUIREMENTS = Path(__file__).with_name("requirements-py27.txt")
SUMMARY = ROOT / "docs" / "conformance.md"
# The last virtualenv that still creates Python 2.7 environments (20.22 dropped them); it runs on
# this Python 3 and seeds the new environment with pip 20.3.4, setuptools 44 and wheel 0.37.
VIRTUALENV = "virtualenv==20.21.1"
AGENT = "wedsync"

# Case groups run (12 and 13 test permessage-deflate, which daphne does not offer), their titles in
# the suite, and how many cases autobahntestsuite 25.10.1 (pinned) has in them.
CASE_GROUPS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc",
}
EXPECTED_CASES = 301
# Case 9 sends messages of up to 16 MiB; the echo node takes that much (REALTIME_MAX_FRAME's maximum).
MAX_MESSAGE = 16 * 1024 * 1024
PASSING = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
PASSING_CLOSE = frozenset({"OK", "INFORMATIONAL"})
# Cases whose behaviour is accepted although it is none of the above: case id -> why. Every entry
# is also listed in docs/conformance.md and decision 0020; an entry whose case passes is reported.
EXCEPTIONS: dict[str, str] = {}

# Three fuzzing clients run side by side, each on its own share of the cases, so that the run takes
# as long as its slowest share instead of the sum. 6.4.4 alone takes 15 s: the suite's close frame
# is swallowed as the rest of the frame it cut short, so the node waits out its 15 s close handshake
# (CLOSE_HANDSHAKE_SECONDS, decision 0003) before it drops the connection.
SHARDS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("6.4.4",), ()),
    (("9.*",), ()),
    (tuple(f"{group}.*" for group in CASE_GROUPS if group != "9"), ("6.4.4",)),
)
INSTALL_SECONDS = 600
RUN_SECONDS = 240  # a stack that drops empty messages waits out 9.7.1's and 9.8.1's 60 s each


class SuiteUnavailable(Exception):
    """The suite could not be installed or started here."""


@dataclass(frozen=True)
class CaseResult:
    case: str
    behavior: str
    behavior_close: str
    duration_ms: int
    remote_close_code: int | None

    @property
    def group(self) -> str:
        return self.case.split(".", 1)[0]

    @property
    def passing(self) -> bool:
        return self.behavior in PASSING and self.behavior_close in PASSING_CLOSE


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


# --- Python 2.7 and the suite ------------------------------------------------------------------------


def python27() -> Path | None:
    """A working Python 2.7: ``WEDSYNC_PYTHON27``, else pyenv's newest 2.7, else ``python2.7``."""
    candidates: list[Path] = []
    if configured := os.environ.get("WEDSYNC_PYTHON27"):
        candidates.append(Path(configured))
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted(pyenv_root.glob("versions/2.7*/bin/python"), key=lambda path: path.parts, reverse=True)
    if on_path := shutil.which("python2.7"):
        candidates.append(Path(on_path))  # a pyenv shim fails below unless 2.7 is selected
    for candidate in candidates:
        try:
            answer = subprocess.run(
                [str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if answer.returncode == 0 and answer.stdout.strip() == "2.7":
            return candidate
    return None


PYTHON27_LOOKED_FOR = "WEDSYNC_PYTHON27, pyenv's versions/2.7*/bin/python or python2.7 on PATH"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One installer at a time (make conformance and make test may start together)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: Sequence[str | Path], *, env: Mapping[str, str] | None = None, timeout: float) -> str:
    try:
        done = subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SuiteUnavailable(f"{' '.join(map(str, command))}: {error}") from error
    if done.returncode != 0:
        raise SuiteUnavailable(f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def ensure_suite(*, python: Path, folder: Path = SUITE_FOLDER) -> Path:
    """The suite's ``wstest`` in ``folder/py27``, a virtualenv of ``python`` holding exactly
    ``requirements-py27.txt``; (re)built when missing or when the pins or the interpreter changed."""
    folder.mkdir(exist_ok=True)
    environment = folder / "py27"
    wstest = environment / "bin" / "wstest"
    stamp = environment / ".wedsync-installed"
    recipe = [REQUIREMENTS.read_bytes(), VIRTUALENV.encode(), str(python).encode()]
    wanted = hashlib.sha256(b"\n".join(recipe)).hexdigest()
    with _locked(folder / ".lock"):
        if wstest.exists() and stamp.exists() and stamp.read_text() == wanted:
            return wstest
        started = time.monotonic()
        shutil.rmtree(environment, ignore_errors=True)
        bootstrap = folder / "bootstrap"
        pinned = VIRTUALENV.replace("==", "-")
        if not (bootstrap / f"{pinned}.dist-info").exists():
            shutil.rmtree(bootstrap, ignore_errors=True)
            quiet = ("--quiet", "--disable-pip-version-check")
            _run([sys.executable, "-m", "pip", "install", *quiet, "--target", bootstrap, VIRTUALENV], timeout=300)
        virtualenv = [sys.executable, "-m", "virtualenv", "--quiet", "--no-periodic-update"]
        _run(
            [*virtualenv, "--app-data", folder / "app-data", "--python", python, environment],
            env={"PYTHONPATH": str(bootstrap)},
            timeout=120,
        )
        pip = environment / "bin" / "pip"
        _run([pip, "install", "--quiet", "--no-deps", "--no-compile", "-r", REQUIREMENTS], timeout=INSTALL_SECONDS)
        _run([pip, "check"], timeout=60)
        _run([wstest, "--autobahnversion"], timeout=60)
        stamp.write_text(wanted)
        print(f"conformance: installed the Autobahn testsuite in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return wstest


def suite_versions(wstest: Path) -> dict[str, str]:
    """What the run used: the suite's and its Python's versions, and the node's daphne stack."""
    python = wstest.parent / "python"
    probe = "import sys, autobahntestsuite; print(autobahntestsuite.__version__); print(sys.version.split()[0])"
    suite, python_version = _run([python, "-c", probe], timeout=60).split()
    return {
        "autobahntestsuite": suite,
        "Python (suite)": python_version,
        "Python (node)": platform.python_version(),
        "daphne": version("daphne"),
        "autobahn (node)": version("autobahn"),
        "Twisted (node)": version("twisted"),
    }


# --- Running -----------------------------------------------------------------------------------------


def fuzzing_spec(*, url: str, outdir: Path, cases: Sequence[str], exclude: Sequence[str]) -> dict[str, object]:
    return {
        "options": {"failByDrop": False},
        "outdir": str(outdir),
        "servers": [{"agent": AGENT, "url": url}],
        "cases": list(cases),
        "exclude-cases": list(exclude),
        "exclude-agent-cases": {},
    }


def read_report(outdir: Path) -> dict[str, CaseResult]:
    """The cases of the suite's ``index.json`` in ``outdir``."""
    index = json.loads((outdir / "index.json").read_text())
    return {
        case: CaseResult(
            case=case,
            behavior=entry["behavior"],
            behavior_close=entry["behaviorClose"],
            duration_ms=int(entry["duration"]),
            remote_close_code=entry.get("remoteCloseCode"),
        )
        for case, entry in index[AGENT].items()
    }


def run_fuzzing(*, wstest: Path, url: str, workdir: Path, seconds: float = RUN_SECONDS) -> dict[str, CaseResult]:
    """Every case of :data:`CASE_GROUPS` against ``url``: :data:`SHARDS` run side by side, each
    stopped (by its PID) if the whole run takes more than ``seconds``."""
    processes: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    try:
        for number, (cases, exclude) in enumerate(SHARDS):
            outdir, spec, log = (workdir / f"shard{number}{suffix}" for suffix in ("", ".json", ".log"))
            spec.write_text(json.dumps(fuzzing_spec(url=url, outdir=outdir, cases=cases, exclude=exclude), indent=2))
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [str(wstest), "--mode", "fuzzingclient", "--spec", str(spec)],
                    cwd=workdir,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            processes.append((process, outdir, log))
        deadline = time.monotonic() + seconds
        for process, _, log in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the fuzzing client took over {seconds} s:\n{_tail(log)}") from None
            if process.returncode != 0:
                raise AssertionError(f"the fuzzing client exited {process.returncode}:\n{_tail(log)}")
    finally:
        for process, _, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    results: dict[str, CaseResult] = {}
    for _, outdir, _ in processes:
        shard = read_report(outdir)
        overlap = results.keys() & shard.keys()
        assert not overlap, f"cases run twice: {sorted(overlap, key=case_key)}"
        results.update(shard)
    return results


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


# --- Judging and the summary -------------------------------------------------------------------------


def problems(results: Mapping[str, CaseResult], *, exceptions: Mapping[str, str] = EXCEPTIONS) -> list[str]:
    """Everything wrong with a run: cases missing or unknown, cases that fail without a documented
    exception, and exceptions for cases that no longer need one. Empty when the run conforms."""
    found: list[str] = []
    if len(results) != EXPECTED_CASES:
        found.append(f"{len(results)} cases ran, autobahntestsuite 25.10.1 has {EXPECTED_CASES} in groups 1-7, 9, 10")
    groups = collections.Counter(result.group for result in results.values())
    found += [f"no case of group {group} ran" for group in CASE_GROUPS if not groups[group]]
    found += [f"case {case} is outside groups 1-7, 9, 10" for case in results if results[case].group not in CASE_GROUPS]
    for case in sorted(results, key=case_key):
        result = results[case]
        if result.passing and case in exceptions:
            found.append(f"{case} passes now ({result.behavior}): drop its exception")
        elif not result.passing and case not in exceptions:
            close = f"close {result.behavior_close} (remote close code {result.remote_close_code})"
            found.append(f"{case}: {result.behavior}, {close}")
    return found


def summary_markdown(
    results: Mapping[str, CaseResult],
    *,
    versions: Mapping[str, str],
    command: str,
    day: datetime.date,
    wall_seconds: float,
    exceptions: Mapping[str, str] = EXCEPTIONS,
) -> str:
    """docs/conformance.md: counts per case group and behaviour, the exceptions and how it was run."""
    behaviours = ("OK", "NON-STRICT", "INFORMATIONAL")
    lines = [
        "# WebSocket conformance: the Autobahn testsuite",
        "",
        "Generated by `make conformance` (do not edit by hand); `make test` runs the same check in",
        "`tests/conformance/test_autobahn.py`. Why and how: `docs/decisions/0020-autobahn-conformance.md`.",
        "",
        "The suite's fuzzing client drives a daphne node that runs the product's own socket stack",
        "(`wedsync/asgi.py` installs `realtime/daphne/patches.py`) and serves the test-only echo",
        "route (`REALTIME_CONFORMANCE_ECHO=1`, refused outside an embedded `DEBUG=1` process). The",
        f"node runs with `REALTIME_MAX_FRAME={MAX_MESSAGE}` (16 MiB, the setting's maximum) and",
        "daphne's `--websocket-max-message-size`/`--websocket-max-frame-size` at the same value,",
        "because case 9 echoes messages of up to 16 MiB; the product's default stays 64 KiB. Groups",
        "12 and 13 (permessage-deflate) are not run: daphne does not offer compression.",
        "",
        "## Result",
        "",
        "| group | cases | " + " | ".join(behaviours) + " | other |",
        "| --- | ---: | " + " | ".join("---:" for _ in behaviours) + " | ---: |",
    ]
    by_group: dict[str, list[CaseResult]] = collections.defaultdict(list)
    for result in results.values():
        by_group[result.group].append(result)
    totals: collections.Counter[str] = collections.Counter()
    for group, title in CASE_GROUPS.items():
        counts = collections.Counter(
            result.behavior if result.passing else "other" for result in by_group.get(group, [])
        )
        totals.update(counts)
        row = [f"{group} {title}", str(len(by_group.get(group, [])))]
        row += [str(counts[name]) for name in (*behaviours, "other")]
        lines.append("| " + " | ".join(row) + " |")
    total_row = ["**all**", f"**{len(results)}**"] + [f"**{totals[name]}**" for name in (*behaviours, "other")]
    lines.append("| " + " | ".join(total_row) + " |")
    lines += ["", "A case counts as passing when its behaviour is OK, NON-STRICT or INFORMATIONAL and its"]
    lines += ['closing behaviour OK or INFORMATIONAL; "other" is any other outcome.', ""]
    for name in ("NON-STRICT", "INFORMATIONAL"):
        cases = sorted((case for case, result in results.items() if result.behavior == name), key=case_key)
        lines.append(f"- {name}: {', '.join(cases) if cases else 'none'}.")
    failing = sorted((case for case, result in results.items() if not result.passing), key=case_key)
    lines.append(f"- Other: {', '.join(failing) if failing else 'none'}.")
    lines += ["", "Why the NON-STRICT and INFORMATIONAL cases are right, and why 6.4.4 takes 15 s: decision 0020."]
    lines += ["", "## Exceptions", ""]
    if exceptions:
        lines += [f"- {case}: {why}" for case, why in sorted(exceptions.items(), key=lambda item: case_key(item[0]))]
    else:
        lines.append("None.")
    lines += [
        "",
        "## How it ran",
        "",
        f"- Command: `{command}`",
        f"- Date: {day.isoformat()}",
        f"- Wall time of the fuzzing clients: {wall_seconds:.1f} s ({len(SHARDS)} clients side by side)",
    ]
    lines += [f"- {name}: {value}" for name, value in versions.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``make conformance``: install the suite if needed, run it, rewrite the summary, judge."""
    from tests.realtime.nodes import echo_node  # a node, started and stopped by PID

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--summary", type=Path, default=SUMMARY, help="where to write the summary (markdown)")
    parser.add_argument("--install-only", action="store_true", help="install the suite if needed, run nothing")
    args = parser.parse_args(argv)
    python = python27()
    if python is None:
        print(f"conformance: no Python 2.7 found ({PYTHON27_LOOKED_FOR})", file=sys.stderr)
        return 2
    try:
        wstest = ensure_suite(python=python)
    except SuiteUnavailable as error:
        print(f"conformance: the Autobahn testsuite is not available: {error}", file=sys.stderr)
        return 2
    if args.install_only:
        print(f"conformance: the Autobahn testsuite is ready: {wstest}")
        return 0
    with tempfile.TemporaryDirectory(prefix="wedsync-conformance-") as scratch:
        workdir = Path(scratch)
        with echo_node(workdir, max_frame=MAX_MESSAGE) as node:
            started = time.monotonic()
            results = run_fuzzing(wstest=wstest, url=node.echo_url, workdir=workdir)
            wall = time.monotonic() - started
    today = datetime.datetime.now(datetime.UTC).date()
    text = summary_markdown(
        results, versions=suite_versions(wstest), command="make conformance", day=today, wall_seconds=wall
    )
    args.summary.write_text(text)
    found = problems(results)
    for problem in found:
        print(f"conformance: {problem}", file=sys.stderr)
    print(f"conformance: {len(results)} cases, {len(found)} problems, {wall:.1f} s; summary in {args.summary}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
