"""The embedded profile's Celery broker: kombu's filesystem transport, with each message written
whole before it can be read.

kombu's ``Channel._put`` creates the message file under its final name and then writes it, while
``_get`` in another process (the worker's, beat's and daphne's all share the folder) may move and
read it in between: it reads an empty file and the worker stops with a JSONDecodeError
(celery/kombu#1551, still open). Here the file is written under a name ``_get`` skips and renamed
into place, which is atomic on one filesystem. The subclass overrides one private method, so it
refuses a kombu release it was not read against (tests/wedsync/test_celery_filesystem.py).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from importlib.metadata import version
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

VERIFIED_KOMBU_VERSIONS = frozenset({"5.7.0"})
WRITING_PREFIX = ".writing-"  # ``_get`` takes only names whose part after the first dot is "<queue>.msg"


class UnverifiedKombuError(RuntimeError):
    """kombu is at a release whose filesystem transport this module was not checked against."""


def require_verified_kombu(version: str) -> None:
    if version not in VERIFIED_KOMBU_VERSIONS:
        raise UnverifiedKombuError(
            f"wedsync.celery_filesystem overrides kombu's filesystem Channel._put and knows kombu "
            f"{', '.join(sorted(VERIFIED_KOMBU_VERSIONS))}, not {version}: read the new release's "
            "kombu/transport/filesystem.py against it, then add the version to VERIFIED_KOMBU_VERSIONS"
        )


class Channel(filesystem.Channel):
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]  # as kombu's own
        """Put a message on ``queue``: written under a hidden name, then renamed to the one
        ``_get`` looks for (kombu's own order: milliseconds, a uuid, the queue)."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        writing = os.path.join(self.data_folder_out, f"{WRITING_PREFIX}{uuid.uuid4().hex}")
        try:
            with open(writing, "wb", buffering=0) as file:
                file.write(str_to_bytes(dumps(message)))
            os.replace(writing, final)
        except OSError as error:
            with contextlib.suppress(OSError):  # nothing half written left behind
                os.unlink(writing)
            raise ChannelError(f"Cannot add file {final!r} to directory") from error


class Transport(filesystem.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        require_verified_kombu(version("kombu"))
        super().__init__(*args, **kwargs)
