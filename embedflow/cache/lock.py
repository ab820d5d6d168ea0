"""The cache's run lock: embed holds it shared while it runs; prune takes it exclusive.

``flock`` on ``<cache>/.lock``: the kernel drops a lock when its holder dies, so
a killed job never leaves the cache locked (NFS: Linux maps flock to the
server's byte-range locks, shared across clients).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from embedflow.errors import UserError

LOCK_FILE = ".lock"


class CacheBusy(UserError):
    """A run holds the cache."""


@contextmanager
def run_lock(path: str | Path, exclusive: bool = False):
    """Shared (a run) or exclusive (prune: refused at once, with CacheBusy, while a run holds it)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if exclusive:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CacheBusy(
                    f"vector cache {folder}: a run is using it (an embed job holds {folder / LOCK_FILE}); "
                    "try again when no run is active"
                ) from None
        else:
            fcntl.flock(descriptor, fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)
