"""Files that appear whole or not at all: write a hidden temporary file, then rename."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class HeldTemporary:
    """A writer's claim on its temporary file: an exclusive ``flock`` held from before the file
    has content until the writer is done. The kernel drops the lock when its process dies, so a
    temporary that nobody holds is a killed writer's. A pid in the name cannot tell that: a
    killed job's pid stays alive as a zombie where nothing reaps orphans (a container whose
    pid 1 is not an init), and pids are reused."""

    def __init__(self, temporary: Path):
        self.path = temporary
        self._descriptor = os.open(temporary, os.O_CREAT | os.O_WRONLY, 0o644)
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


@contextmanager
def held_temporary(path: Path):
    """``path``'s temporary, created and held while the block runs (``HeldTemporary``)."""
    claim = HeldTemporary(temporary_path(path))
    try:
        yield claim.path
    finally:
        claim.release()


def _unheld(candidate: Path) -> bool:
    """Remove ``candidate`` if no live writer holds it; True if removed."""
    try:
        descriptor = os.open(candidate, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return False
    try:
        candidate.unlink(missing_ok=True)  # under the lock: no writer can claim it meanwhile
    finally:
        os.close(descriptor)
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Temporary files of ``path`` left by a process that was killed (it could not clean up):
    those no live writer holds (``HeldTemporary``)."""
    return [candidate for candidate in sorted(path.parent.glob(f".{path.name}.*.tmp")) if _unheld(candidate)]


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
