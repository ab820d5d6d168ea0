"""sha256 of files and texts, the one hashing convention of the workflow."""

import hashlib
import json
from pathlib import Path

_BLOCK = 1 << 20


# A large file's digest is kept for the life of the process while the file is the same
# (device, inode, size, mtime): a job that hashed its Parquet (load, measure) writes its
# provenance without reading it again, which at 10 M x 2,560 float32 is 100 GB. Small files
# are always read: an edit in place within one tick of the file system's clock keeps the
# same size and mtime, and rereading them costs nothing.
_REMEMBERED_FROM_BYTES = 64 << 20
_remembered: dict[tuple, str] = {}


def _identity(path: str | Path) -> tuple:
    stat = Path(path).stat()
    return (str(Path(path).resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def sha256_file(path: str | Path) -> str:
    identity = _identity(path)
    if identity in _remembered:
        return _remembered[identity]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    if identity[3] >= _REMEMBERED_FROM_BYTES and _identity(path) == identity:  # not changed while read
        _remembered[identity] = digest.hexdigest()
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hash of the exact UTF-8 text that was embedded (the `text_sha256` column)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_tree(folder: str | Path) -> dict[str, str]:
    """sha256 of every file under a folder, keyed by its relative path (sorted)."""
    root = Path(folder)
    return {
        str(path.relative_to(root)): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ASCII (JSON escapes): any text JSON can hold hashes, a lone surrogate included. One encoder
# for all: json.dumps would build one per record (a tenth of the load's hashing time).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def sha256_record(record: dict) -> bytes:
    """Digest of a chunk's record as the chunks file has it (canonical JSON): what a table row
    holds besides its vector, so an edit of its text, summary or metadata changes it."""
    return hashlib.sha256(_CANONICAL_JSON.encode(record).encode("ascii")).digest()


def sha256_bytes(data) -> bytes:
    """Digest of ``data``: bytes, or any contiguous buffer (a row of a numpy array)."""
    return hashlib.sha256(data).digest()
