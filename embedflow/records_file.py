"""The corpus's records index, written by rule preflight as it checks every chunk.

One row per accepted chunk, in file order: its ``position`` in the file, its
``id``, its ``place`` (the byte offset of its line in a JSON Lines file, its
position in a JSON array: ``embedflow.chunks.records_at`` reads it there) and
the ``record_sha256`` of its record (``embedflow.hashing.sha256_record``). The
file's metadata names the sha256 of the chunks file it indexes.

Parsing the records and hashing their canonical JSON is most of what a diff
load would otherwise spend on an unchanged row; preflight parses every record
anyway, once per corpus version, so each load of each model and precision
reads 48 bytes a row here instead (``embedflow.load.LoadRows``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedflow.atomic import HeldTemporary, remove_stale_temporaries, temporary_path
from embedflow.errors import InputError
from embedflow.hashing import sha256_record

CORPUS_KEY = b"embedflow.corpus_sha256"
SCHEMA = pa.schema([("position", pa.int64()), ("id", pa.string()), ("place", pa.int64()),
                    ("record_sha256", pa.binary(32))])
BATCH_ROWS = 65_536


class RecordsWriter:
    """Context manager: ``add`` per accepted chunk (``validate_chunks(accepted=...)``), then
    set ``corpus_sha256`` (``CorpusSummary.sha256``: the file is hashed once, by the check);
    renamed into place only when the block ends without an error."""

    def __init__(self, path: str | Path):
        self.path, self.corpus_sha256 = Path(path), None
        self._tmp = temporary_path(self.path)
        self._columns: tuple[list, ...] = ([], [], [], [])

    def __enter__(self) -> RecordsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        self._claim = HeldTemporary(self._tmp)
        self._writer = pq.ParquetWriter(self._tmp, SCHEMA, compression="zstd", use_dictionary=False)
        return self

    def add(self, position: int, place: int, chunk_id: str, record: dict) -> None:
        for column, value in zip(self._columns, (position, chunk_id, place, sha256_record(record))):
            column.append(value)
        if len(self._columns[0]) == BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._columns[0]:
            self._writer.write_table(pa.Table.from_arrays(
                [pa.array(values, type=field.type) for values, field in zip(self._columns, SCHEMA)], schema=SCHEMA))
            self._columns = ([], [], [], [])

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                if self.corpus_sha256 is None:
                    raise ValueError(f"{self.path}: no corpus_sha256 given: the index would name no corpus")
                self._flush()
                self._writer.add_key_value_metadata({CORPUS_KEY: self.corpus_sha256.encode()})
            self._writer.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
            self._claim.release()


def indexed_corpus(path: str | Path) -> str | None:
    """The sha256 of the chunks file a records index indexes; None if it is not one."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = metadata.get(CORPUS_KEY)
    return value.decode() if value else None


def iter_index(path: str | Path) -> Iterator[tuple[str, int, bytes]]:
    """(id, place, record_sha256) of each indexed chunk, in file order."""
    for ids, places, hashes in iter_index_batches(path):
        yield from zip(ids, places.tolist(), map(bytes, hashes))


def iter_index_batches(path: str | Path) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """The index a batch at a time: (ids, places as int64, record_sha256 as (rows, 32) uint8)."""
    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["id", "place", "record_sha256"]):
            places, hashes = batch.column(1), batch.column(2)
            if places.null_count or hashes.null_count:
                raise InputError(f"{path}: a place or record hash is missing; rerun preflight")
            yield (batch.column(0).to_pylist(),
                   np.frombuffer(places.buffers()[1], dtype="<i8", count=len(places), offset=places.offset * 8),
                   np.frombuffer(hashes.buffers()[1], dtype=np.uint8, count=len(hashes) * 32,
                                 offset=hashes.offset * 32).reshape(-1, 32))
