"""sha256 of files and texts, the one hashing convention of the workflow."""

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
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
