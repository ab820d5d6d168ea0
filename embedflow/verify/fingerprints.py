"""Fingerprints of ids and text hashes, and the chunks verify compares the file with.

What grows with the corpus is 16 bytes a row of fingerprints (64-bit hashes
of id and text hash), in the file and in the chunks: 32 MB per million rows.
A finding names a few rows (``EXAMPLES``); their ids are read back from the
file's id column or from the chunks by fingerprint or position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedflow.chunks import CorpusSummary, iter_chunks, select_positions
from embedflow.embeddings_file import iter_batches
from embedflow.errors import InputError
from embedflow.hashing import sha256_file, sha256_text

EXAMPLES = 5  # ids named in a finding


def id_fingerprints(ids: list[str | None]) -> np.ndarray:
    """64-bit hashes of ids (blake2b): set, order and duplicate checks without keeping strings."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(("" if i is None else i).encode(), digest_size=8).digest(), "little")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def hash_fingerprints(hexes: list[str | None]) -> np.ndarray:
    """The first 64 bits of hex sha256 digests (0 for a missing or malformed one)."""

    def first64(value):
        try:
            return int(value[:16], 16)
        except (TypeError, ValueError):
            return 0

    return np.fromiter((first64(h) for h in hexes), dtype=np.uint64, count=len(hexes))


@dataclass
class Fingerprints:
    ids: np.ndarray
    texts: np.ndarray


def read_chunks(path, text_field: str, positions=None, skip=()) -> Iterator:
    """The chunks, as embed read them (``skip``: those rule preflight rejected). A file that no
    longer reads as a corpus (edited after embedding) stops verify with a message, as it would
    stop embed."""
    number = 0
    try:
        for number, chunk in enumerate(iter_chunks(path, text_field, positions, skip), start=1):
            if not isinstance(chunk.text, str):
                raise InputError(f"{path}: chunk #{number} (id {chunk.id!r}): '{text_field}' is not a string; "
                                 "the file changed after embedding; run embed (it validates the file)")
            yield chunk
    except (KeyError, TypeError, AttributeError) as error:
        raise InputError(f"{path}: chunk #{number + 1} is not a valid chunk ({error}); the file changed "
                         "after embedding; run embed (it validates the file)") from None


def chunk_fingerprints(path, text_field: str, positions, block: int = 65536, skip=()) -> Fingerprints:
    """Fingerprints of the selected chunks, kept as arrays a block at a time (no list of strings)."""
    ids, texts = [], []
    id_blocks, text_blocks = [], []
    for chunk in read_chunks(path, text_field, positions, skip):
        ids.append(chunk.id)
        texts.append(sha256_text(chunk.text))
        if len(ids) == block:
            id_blocks.append(id_fingerprints(ids))
            text_blocks.append(hash_fingerprints(texts))
            ids, texts = [], []
    id_blocks.append(id_fingerprints(ids))
    text_blocks.append(hash_fingerprints(texts))
    return Fingerprints(np.concatenate(id_blocks), np.concatenate(text_blocks))


@dataclass
class ChunkSelection:
    """The chunks embed took from the chunks file, as fingerprints."""

    path: str | Path
    text_field: str
    positions: list[int] | None  # in test mode, which chunks; None: all of them
    expected: Fingerprints
    corpus: CorpusSummary
    skip: set[int] = field(default_factory=set)  # positions rule preflight rejected (on_bad_chunk: skip)


def select_chunks(path: str | Path, selection: dict, skip=()) -> ChunkSelection:
    """Read as a stream (not validate_chunks, which keeps every id in a dict): the sha256
    check tells whether this is the file that embed validated. ``skip``: the positions rule
    preflight rejected, which embed skipped too."""
    text_field = selection["text_field"]
    positions = None
    count = None
    if selection.get("max_chunks") is not None:  # test mode: which chunks embed took
        count = sum(1 for _ in read_chunks(path, text_field, skip=skip))
        positions = select_positions(
            count,
            selection["max_chunks"],
            selection.get("sample", "head"),
            selection.get("seed", 0),
            skip,
        )
    expected = chunk_fingerprints(path, text_field, positions, skip=skip)
    corpus = CorpusSummary(str(path), count if count is not None else len(expected.ids), sha256_file(path))
    return ChunkSelection(path, text_field, positions, expected, corpus, set(skip))


def examples(positions: list[int], ids_at: dict[int, str]) -> str:
    return ", ".join(f"row {p} (id {ids_at.get(p, '?')!r})" for p in positions[:EXAMPLES])


def ids_at_positions(parquet_path, positions, batch_rows: int = 65536) -> dict[int, str]:
    """ids of a few rows, reading only the id column."""
    wanted = sorted({int(p) for p in positions if p is not None and p >= 0})
    found: dict[int, str] = {}
    if not wanted:
        return found
    offset = 0
    for batch in iter_batches(parquet_path, batch_rows, columns=("id",)):
        end = offset + len(batch.ids)
        found.update({p: batch.ids[p - offset] for p in wanted if offset <= p < end})
        offset = end
        if offset > wanted[-1]:
            break
    return found


def fingerprint_names(parquet_path, fingerprints: set[int], batch_rows: int = 65536) -> dict[int, tuple[int, str]]:
    """(first position, id) for the given id fingerprints, reading only the id column."""
    found: dict[int, tuple[int, str]] = {}
    if not fingerprints:
        return found
    offset = 0
    for batch in iter_batches(parquet_path, batch_rows, columns=("id",)):
        ids = batch.ids
        for i, fp in enumerate(id_fingerprints(ids)):
            if int(fp) in fingerprints and int(fp) not in found:
                found[int(fp)] = (offset + i, ids[i])
        offset += len(ids)
        if len(found) == len(fingerprints):
            break
    return found


def chunk_names(chunks_path, text_field: str, positions, fingerprints: set[int], skip=()) -> dict[int, str]:
    found: dict[int, str] = {}
    if not fingerprints:
        return found
    for chunk in iter_chunks(chunks_path, text_field, positions, skip):
        fp = int(id_fingerprints([chunk.id])[0])
        if fp in fingerprints:
            found.setdefault(fp, chunk.id)
            if len(found) == len(fingerprints):
                break
    return found
