"""The embeddings Parquet file (docs/design.md, "The embeddings Parquet file").

One row per chunk in input order: ``id`` (string), ``embedding``
(``fixed_size_list<float32|float16|int8|uint8, width>``) and ``text_sha256``.
The file's key-value metadata repeats model, dim, precision and
normalization, and for int8 the calibration ranges.

``EmbeddingsWriter`` writes row groups as batches arrive into a hidden
temporary file next to the target and renames it into place only when the
file is complete, so no reader ever sees half a file, and a failure (or a
full disk) leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedflow.atomic import HeldTemporary, remove_stale_temporaries, temporary_path
from embedflow.errors import InputError
from embedflow.precision import get_precision

COMPRESSION = "zstd"


@dataclass(frozen=True)
class EmbeddingsMetadata:
    model: str  # the model key (the <model> wildcard)
    model_source: str  # Hugging Face id, local path or bundled:<name>
    dim: int  # embedding dimensions (after truncate_dim)
    precision: str
    normalized: bool
    compute_precision: str
    text_field: str
    corpus_sha256: str
    int8_ranges: list[list[float]] | None = field(default=None)
    # For a variant (embedflow.variants): {"base": <model key>, "way": ..., "dim": ...}
    reduction: dict | None = field(default=None)
    # What computed the vectors (embedflow.backends): torch | onnx | openvino | http, and int8
    # for a quantized graph. Absent in files written before backends existed: torch.
    backend: str | None = field(default=None)
    quantization: str | None = field(default=None)

    def to_parquet(self) -> dict[bytes, bytes]:
        return {
            key.encode(): (value if isinstance(value, str) else json.dumps(value)).encode()
            for key, value in asdict(self).items()
            if value is not None
        }

    @classmethod
    def from_parquet(cls, raw: dict[bytes, bytes] | None, path: str) -> EmbeddingsMetadata:
        raw = {key.decode(): value.decode() for key, value in (raw or {}).items()}
        values = {}
        for item in fields(cls):
            if item.name not in raw:
                if item.default is None:
                    continue
                raise InputError(f"{path}: Parquet metadata has no '{item.name}'")
            text = raw[item.name]
            values[item.name] = text if item.type in ("str", "str | None") else json.loads(text)
        return cls(**values)

    def ranges_array(self) -> np.ndarray | None:
        return None if self.int8_ranges is None else np.asarray(self.int8_ranges, dtype=np.float32)


def arrow_schema(meta: EmbeddingsMetadata) -> pa.Schema:
    precision = get_precision(meta.precision)
    value_type = pa.from_numpy_dtype(precision.numpy_dtype)
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(value_type, precision.width(meta.dim)), nullable=False),
            pa.field("text_sha256", pa.string(), nullable=False),
        ],
        metadata=meta.to_parquet(),
    )


class EmbeddingsWriter:
    """Context manager: ``write(ids, vectors, hashes)`` per batch; renamed into place on success."""

    def __init__(self, path: str | Path, meta: EmbeddingsMetadata):
        self.path = Path(path)
        self.meta = meta
        self.schema = arrow_schema(meta)
        self._precision = get_precision(meta.precision)
        self._tmp = temporary_path(self.path)
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def __enter__(self) -> EmbeddingsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        self._claim = HeldTemporary(self._tmp)
        # No dictionary encoding: ids and hashes are unique and vectors hardly repeat,
        # so a dictionary only costs memory (a per-column page held until fallback).
        self._writer = pq.ParquetWriter(
            self._tmp, self.schema, compression=COMPRESSION, use_dictionary=False
        )
        return self

    def write(self, ids: list[str], vectors: np.ndarray, hashes: list[str]) -> None:
        width = self._precision.width(self.meta.dim)
        if vectors.shape != (len(ids), width):
            raise ValueError(f"batch of shape {vectors.shape}, expected ({len(ids)}, {width})")
        flat = pa.array(
            np.ascontiguousarray(vectors, dtype=self._precision.numpy_dtype).reshape(-1),
            type=self.schema.field("embedding").type.value_type,
        )
        table = pa.Table.from_arrays(
            [
                pa.array(ids, type=pa.string()),
                pa.FixedSizeListArray.from_arrays(flat, width),
                pa.array(hashes, type=pa.string()),
            ],
            schema=self.schema,
        )
        self._writer.write_table(table, row_group_size=max(len(ids), 1))
        self.rows += len(ids)

    def write_table(self, table: pa.Table) -> None:
        """A batch already in this file's columns (rule gather copies row groups), as one row group."""
        try:  # Parquet names a list's values "element" where Arrow says "item": the same column
            table = table.cast(self.schema)
        except (ValueError, TypeError, pa.ArrowInvalid) as error:
            raise ValueError(f"batch of schema {table.schema}, expected {self.schema}: {error}") from None
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self._writer.close()
            if exc_type is None:
                _fsync(self._tmp)
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp.exists():
                self._tmp.unlink()
            self._claim.release()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def read_metadata(path: str | Path) -> EmbeddingsMetadata:
    return EmbeddingsMetadata.from_parquet(pq.read_schema(path).metadata, str(path))


def row_count(path: str | Path) -> int:
    """Rows of a Parquet file, from its footer."""
    with pq.ParquetFile(path) as parquet:
        return parquet.metadata.num_rows


@dataclass
class EmbeddingsBatch:
    ids: list[str] | None  # None where ``iter_batches`` did not read the column
    vectors: np.ndarray | None  # (rows, width) in the stored dtype
    hashes: list[str] | None


def fixed_size_list_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    width = column.type.list_size
    values = column.flatten()
    kind = "f" if pa.types.is_floating(values.type) else "i" if pa.types.is_signed_integer(values.type) else "u"
    if values.null_count or not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        return values.to_numpy(zero_copy_only=False).reshape(-1, width)
    # A view of Arrow's buffer, as to_numpy would give, without the pandas it imports on first use
    # (0.5 s in every job that reads vectors)
    dtype = np.dtype(f"<{kind}{values.type.bit_width // 8}")
    return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values),
                         offset=values.offset * dtype.itemsize).reshape(-1, width)


COLUMNS = ("id", "embedding", "text_sha256")


def iter_batches(path: str | Path, batch_rows: int = 8192, columns: tuple[str, ...] = COLUMNS
                 ) -> Iterator[EmbeddingsBatch]:
    """Stream a file batch by batch; memory stays bounded by ``batch_rows``. Only ``columns``
    are read: the batch holds None for the others."""

    def read(record_batch, name, convert):
        return convert(record_batch.column(name)) if name in columns else None

    # pre_buffer=False: pyarrow otherwise keeps what it has read, and memory grows with the file
    # (measured: +150 MB per 100k rows x 384 float32)
    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        subset = None if columns == COLUMNS else list(columns)
        for record_batch in parquet.iter_batches(batch_size=batch_rows, columns=subset):
            yield EmbeddingsBatch(
                ids=read(record_batch, "id", pa.Array.to_pylist),
                vectors=read(record_batch, "embedding", fixed_size_list_to_numpy),
                hashes=read(record_batch, "text_sha256", pa.Array.to_pylist),
            )


def read_ahead(items: Iterator, depth: int = 2) -> Iterator:
    """``items`` produced in a thread, up to ``depth`` ahead of the caller: the decoding of
    the next Parquet batch (pyarrow releases the GIL) overlaps the caller's work on this one.
    An error in the thread is raised here; closing this iterator stops the thread."""
    import queue
    import threading

    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def offer(entry) -> bool:
        """Put ``entry`` when there is room; False once the caller has stopped (never blocks
        for good: the caller may be gone)."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            offer((done, error))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def rows_at(path: str | Path, numbers: list[int]) -> Iterator[tuple[int, str, np.ndarray, str]]:
    """(row number, id, vector, text_sha256) of the rows at ``numbers`` (sorted), reading only
    the row groups that hold them."""
    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        first, taken = 0, 0
        for group in range(parquet.num_row_groups):
            end = first + parquet.metadata.row_group(group).num_rows
            inside = []
            while taken < len(numbers) and numbers[taken] < end:
                inside.append(numbers[taken] - first)
                taken += 1
            if inside:
                rows = parquet.read_row_group(group, columns=list(COLUMNS)).take(inside)
                vectors = fixed_size_list_to_numpy(rows.column("embedding"))
                for at, chunk_id, vector, text_hash in zip(inside, rows.column("id").to_pylist(), vectors,
                                                           rows.column("text_sha256").to_pylist()):
                    yield first + at, chunk_id, vector, text_hash
            first = end
        if taken < len(numbers):
            raise InputError(f"{path}: has {first} rows, no row {numbers[taken]}")


def iter_row_groups(path: str | Path) -> Iterator[pa.Table]:
    """A file's row groups as Arrow tables, one at a time, as stored (rule gather)."""
    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        for index in range(parquet.num_row_groups):
            yield parquet.read_row_group(index)


def read_all(path: str | Path) -> tuple[EmbeddingsMetadata, EmbeddingsBatch]:
    """The whole file in memory; for tests and small corpora."""
    table = pq.read_table(path)
    return read_metadata(path), EmbeddingsBatch(
        ids=table.column("id").to_pylist(),
        vectors=fixed_size_list_to_numpy(table.column("embedding")),
        hashes=table.column("text_sha256").to_pylist(),
    )
