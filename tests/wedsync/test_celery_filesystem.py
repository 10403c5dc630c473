"""The embedded profile's Celery broker (wedsync/celery_filesystem.py): a reader polling the queue
while another thread writes never takes a message half written, and the override refuses a kombu
release it was not read against."""

from __future__ import annotations

import multiprocessing
import time
from importlib.metadata import version
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection

from wedsync.celery_filesystem import (
    VERIFIED_KOMBU_VERSIONS,
    Transport,
    UnverifiedKombuError,
    require_verified_kombu,
)

MESSAGES = 500


def channel_in(folder: Path) -> Any:
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "control_folder": str(folder / "control"),
    }
    return Connection(transport=Transport, transport_options=options).channel()


def write_messages(folder: str, payload: dict[str, Any]) -> None:
    channel = channel_in(Path(folder))
    for n in range(MESSAGES):
        channel._put("celery", {**payload, "n": n})


def test_a_reader_racing_a_writer_process_gets_every_message_whole(tmp_path: Path) -> None:
    """As in `make run`: beat's process writes while the worker's reads (kombu#1551)."""
    for folder in ("processed", "control"):
        (tmp_path / folder).mkdir()
    channel = channel_in(tmp_path)
    # kombu's own _put encodes after creating the file: a payload slow to encode widens that window.
    payload = {"body": list(range(5000)), "headers": {}}
    writer = multiprocessing.get_context("spawn").Process(target=write_messages, args=(str(tmp_path), payload))
    writer.start()
    received: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while len(received) < MESSAGES and time.monotonic() < deadline:
            try:
                received.append(channel._get("celery"))
            except Empty:
                if not writer.is_alive() and not any(tmp_path.glob("*.msg")):
                    break
    finally:
        writer.join(timeout=30)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0
    assert sorted(message["n"] for message in received) == list(range(MESSAGES))
    assert all(message["body"] == payload["body"] for message in received)
    assert not list(tmp_path.glob(".writing-*")), "every message was renamed into place"


def test_the_installed_kombu_is_one_the_override_was_read_against() -> None:
    assert version("kombu") in VERIFIED_KOMBU_VERSIONS
    require_verified_kombu(version("kombu"))


def test_an_unknown_kombu_release_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UnverifiedKombuError, match=r"read the new release's kombu/transport/filesystem\.py"):
        require_verified_kombu("9.0.0")
