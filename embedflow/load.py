"""Stage ``load``: one verified embeddings file → one pgvector table, atomically.

Everything happens in one transaction. The rows (text and metadata joined from
the chunks file on id, vectors from the Parquet, one batch at a time) are
hashed, and their hashes COPYed and compared with the live table's
(``embedflow.table_plan``). When the table was loaded by this workflow with the
same column and few rows changed, only the difference is applied
(``embedflow.diff_load``): the table keeps its oid and its index. Otherwise a
new table is COPYed, indexed and swapped in (``embedflow.serving``). A failure
anywhere, a killed process included, rolls all of it back: the previous table
and index stay as they were and no marker is written (the marker is written
after the commit, atomically). The table's registry row records the sha256 of
the Parquet it came from, which ``embedflow check`` compares with the marker.
"""

from __future__ import annotations

import logging
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from embedflow.atomic import write_json
from embedflow.chunks import TEXT_COLUMNS, batched, iter_records, records_at
from embedflow.database import DatabaseSettings, connect, describe_target, server_versions, table_state
from embedflow.diff_load import FINGERPRINT_DTYPE, diff_load, lock_for_writing, table_fingerprints
from embedflow.embeddings_file import iter_batches, read_ahead, read_metadata, row_count, rows_at
from embedflow.errors import InputError, UserError
from embedflow.hashing import sha256_bytes, sha256_file, sha256_record
from embedflow.provenance import Timer, write_provenance
from embedflow.records_file import indexed_corpus, iter_index_batches
from embedflow.rejected import rejected_positions
from embedflow.serving import (
    ServingSettings,
    copy_sql,
    copy_types,
    create_table,
    ensure_registry,
    index_staging,
    record_load,
    served_by_workflow,
    swap_in,
)
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.table_plan import (
    choose_strategy,
    diff_changes,
    first_load_counts,
    plan_beside_outcome,
    stage_hashes,
    vectors_identity,
)
from embedflow.tables import PKEY_SUFFIX, STAGING_SUFFIX, VectorColumn, column_type

log = logging.getLogger(__name__)


class LoadRow(NamedTuple):
    """One table row, in COPY order (embedflow.serving.COPY_COLUMNS)."""

    id: str
    content: str
    summary: str | None
    metadata: object  # Jsonb
    text_sha256: str
    record_sha256: bytes
    vector_sha256: bytes
    embedding: object


def _vector_value(precision: str, dim: int):
    """Parquet row → the pgvector object COPY writes for this precision."""
    from pgvector import Bit, HalfVector

    if precision == "float32":
        return lambda row: row
    if precision in ("float16", "bfloat16"):
        return lambda row: HalfVector(row)
    if dim % 8 == 0:
        return lambda row: Bit(row.tobytes())
    return lambda row: Bit(np.unpackbits(row, count=dim))


def _aligned(chunks_path, parquet_path, entries) -> Iterator[tuple[str, int, object, np.ndarray, str]]:
    """(id, place in the chunks file, entry, stored vector, text_sha256) in the Parquet's order.

    ``entries``: (id, place, entry) of the chunks in file order (less those rule preflight
    rejected). The Parquet holds the selected chunks in input order, a subsequence of them,
    so both are streamed side by side.
    """
    for batch in read_ahead(iter_batches(parquet_path)):
        for chunk_id, vector, text_hash in zip(batch.ids, batch.vectors, batch.hashes):
            for entry_id, place, entry in entries:
                if entry_id == chunk_id:
                    break
            else:
                raise InputError(f"{parquet_path}: id {chunk_id!r} is not in {chunks_path} (or not in the same "
                                 "order); the embeddings do not belong to this chunks file: rerun embed")
            yield chunk_id, place, entry, vector, text_hash


def _joined(chunks_path, parquet_path, skip) -> Iterator[tuple[str, int, dict, np.ndarray, str]]:
    """_aligned with each chunk's record, read from the chunks file."""
    records = ((str(record["id"]), place, record) for place, record in iter_records(chunks_path, skip=skip))
    return _aligned(chunks_path, parquet_path, records)


KEEP_BYTES = 256 << 20  # vectors of changed rows a diff's first pass keeps (the rest are read again)


class LoadRows:
    """The rows a load of ``parquet_path`` makes: every one in order (iterate: a full load),
    their hashes (``hashes``: a diff's first pass, which also notes where each row is), and
    again only the rows a diff writes (``at``), read where the first pass found them.

    ``records``: rule preflight's records index of the chunks file (``embedflow.records_file``),
    used when it indexes the corpus the Parquet was embedded from; then a diff parses only the
    records it writes."""

    def __init__(self, chunks_path: str | Path, parquet_path: str | Path, precision: str, dim: int,
                 skip: Collection[int] = (), records: str | Path | None = None, corpus_sha256: str | None = None):
        self.chunks_path, self.parquet_path, self.skip = chunks_path, parquet_path, skip
        self.precision, self.dim = precision, dim
        self.to_vector = _vector_value(precision, dim)
        usable = records is not None and corpus_sha256 is not None and indexed_corpus(records) == corpus_sha256
        self.records = records if usable else None
        self.places = array("q")  # row number -> place in the chunks file, filled by hashes()
        self.kept: dict[int, tuple] = {}

    def __iter__(self) -> Iterator[LoadRow]:
        for chunk_id, _, record, vector, text_hash in _joined(self.chunks_path, self.parquet_path, self.skip):
            yield self.row(chunk_id, record, vector, text_hash)

    def _hashed(self) -> Iterator[tuple[str, int, bytes, np.ndarray, str]]:
        for chunk_id, place, record, vector, text_hash in _joined(self.chunks_path, self.parquet_path, self.skip):
            yield chunk_id, place, sha256_record(record), vector, text_hash

    def hashes(self, known: np.ndarray | None = None) -> Iterator[tuple[str, bytes, bytes]]:
        """(id, record_sha256, vector_sha256) of every row, in order, without making the rows.

        ``known``: the fingerprints of the rows the table holds (``table_fingerprints``). A
        row whose fingerprint is not among them is new or changed: its vector is kept (up to
        KEEP_BYTES) for ``at``, which then need not read the Parquet again for it."""
        del self.places[:]
        self.kept, kept_bytes = {}, 0
        blocks = self._indexed_blocks() if self.records is not None else self._parsed_blocks()
        for ids, places, record, vectors, text_hashes in blocks:
            first = len(self.places)
            vector = np.frombuffer(b"".join(map(sha256_bytes, vectors)), dtype=np.uint8).reshape(-1, 32)
            self.places.frombytes(np.ascontiguousarray(places, dtype=np.int64).tobytes())
            if known is not None and kept_bytes < KEEP_BYTES:
                for offset in _unknown(record, vector, known):
                    kept = vectors[offset].copy()  # not a view that would keep the whole batch alive
                    self.kept[first + offset] = (ids[offset], kept, text_hashes[offset],
                                                 (record[offset].tobytes(), vector[offset].tobytes()))
                    kept_bytes += kept.nbytes
            yield from zip(ids, map(bytes, record), map(bytes, vector))

    def _parsed_blocks(self) -> Iterator[tuple[list[str], list[int], np.ndarray, list, list[str]]]:
        """(ids, places, record hashes, vectors, text hashes) of 4,096 rows at a time, each record
        parsed from the chunks file and hashed."""
        for batch in batched(self._hashed(), 4096):
            ids, places, records, vectors, text_hashes = zip(*batch)
            yield (list(ids), list(places), np.frombuffer(b"".join(records), dtype=np.uint8).reshape(-1, 32),
                   vectors, text_hashes)

    def _indexed_blocks(self) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[str]]]:
        """The same from rule preflight's records index, a Parquet batch at a time: no record parsed,
        and where the index's ids are the batch's (the Parquet holds every indexed chunk), no row
        looked at one by one."""
        index = _IndexCursor(self.records, self.chunks_path, self.parquet_path)
        for batch in read_ahead(iter_batches(self.parquet_path)):
            places, record = index.take(batch.ids)
            yield batch.ids, places, record, batch.vectors, batch.hashes

    def at(self, wanted: list[tuple[int, str]]) -> Iterator[LoadRow]:
        """The rows at these (row number, id), after ``hashes``: their records read at their
        places in the chunks file; their vectors those it kept, or read again from the row
        groups that hold them."""
        ids = dict(wanted)
        records = records_at(self.chunks_path, (self.places[number] for number in ids))
        for number in [number for number in ids if number in self.kept]:
            chunk_id, vector, text_hash, digests = self.kept.pop(number)
            record = records[self.places[number]]
            self._check_same(number, ids.pop(number), chunk_id, str(record["id"]))
            yield self.row(chunk_id, record, vector, text_hash, digests)
        for number, chunk_id, vector, text_hash in rows_at(self.parquet_path, sorted(ids)):
            record = records[self.places[number]]
            self._check_same(number, ids[number], chunk_id, str(record["id"]))
            yield self.row(chunk_id, record, vector, text_hash)

    def _check_same(self, number: int, wanted: str, *found: str) -> None:
        if any(chunk_id != wanted for chunk_id in found):
            raise InputError(f"{self.parquet_path} or {self.chunks_path} changed during the load "
                             f"(row {number} is not {wanted!r} any more): rerun the workflow")

    def row(self, chunk_id: str, record: dict, vector: np.ndarray, text_hash: str, digests=None) -> LoadRow:
        from psycopg.types.json import Jsonb

        metadata = {key: value for key, value in record.items() if key not in TEXT_COLUMNS}
        record_hash, vector_hash = digests or (sha256_record(record), sha256_bytes(vector))
        return LoadRow(chunk_id, record["content"], record.get("summary"), Jsonb(metadata), text_hash,
                       record_hash, vector_hash, self.to_vector(vector))


class _IndexCursor:
    """Rule preflight's records index read alongside the Parquet: ``take`` the entries of the
    next Parquet ids, which are the index's in order, less any the embed stage left out."""

    def __init__(self, records: str | Path, chunks_path, parquet_path):
        self.batches = iter_index_batches(records)
        self.chunks_path, self.parquet_path = chunks_path, parquet_path
        self.ids: list[str] = []
        self.places = np.empty(0, dtype=np.int64)
        self.hashes = np.empty((0, 32), dtype=np.uint8)

    def take(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(places, record hashes) of ``ids``; the entries before them are passed over."""
        while len(self.ids) < len(ids) and self._more():
            pass
        if self.ids[:len(ids)] == ids:  # the usual case: one comparison of two lists
            return self._consume(np.arange(len(ids)), len(ids))
        found, at = [], 0
        for chunk_id in ids:
            while True:
                if at == len(self.ids) and not self._more():
                    raise InputError(f"{self.parquet_path}: id {chunk_id!r} is not in {self.chunks_path} (or not "
                                     "in the same order); the embeddings do not belong to this chunks file: "
                                     "rerun embed")
                at += 1
                if self.ids[at - 1] == chunk_id:
                    break
            found.append(at - 1)
        return self._consume(np.asarray(found, dtype=np.int64), at)

    def _more(self) -> bool:
        batch = next(self.batches, None)
        if batch is None:
            return False
        ids, places, hashes = batch
        self.ids += ids
        self.places, self.hashes = np.concatenate([self.places, places]), np.concatenate([self.hashes, hashes])
        return True

    def _consume(self, rows: np.ndarray, through: int) -> tuple[np.ndarray, np.ndarray]:
        taken = self.places[rows], self.hashes[rows]
        del self.ids[:through]
        self.places, self.hashes = self.places[through:], self.hashes[through:]
        return taken


def _unknown(record: np.ndarray, vector: np.ndarray, known: np.ndarray) -> list[int]:
    """Offsets of the rows whose fingerprint (4 bytes of each hash, ``FINGERPRINT_DTYPE``) is
    not in ``known`` (sorted)."""
    prints = np.ascontiguousarray(np.concatenate([record[:, :4], vector[:, :4]], axis=1)
                                  ).view(FINGERPRINT_DTYPE).ravel()
    if not len(known):
        return list(range(len(prints)))
    at = np.minimum(np.searchsorted(known, prints), len(known) - 1)
    return np.flatnonzero(known[at] != prints).tolist()


def row_hashes(chunks_path: str | Path, parquet_path: str | Path, skip: Collection[int] = ()
               ) -> Iterator[tuple[str, bytes, bytes]]:
    """(id, record_sha256, vector_sha256) of every row a load makes, without making them."""
    meta = read_metadata(parquet_path)
    return LoadRows(chunks_path, parquet_path, meta.precision, meta.dim, skip).hashes()


def count_and_dim(cursor, table: str, column: VectorColumn, rows: int | None = None) -> tuple[int, int | None]:
    """The table's rows (counted unless given) and the dim of one of its vectors."""
    from psycopg import sql

    dim_function = "bit_length" if column.type == "bit" else "vector_dims"
    if rows is None:
        rows = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    dim = cursor.execute(
        sql.SQL("SELECT {}(embedding) FROM {} LIMIT 1").format(sql.SQL(dim_function), sql.Identifier(table))
    ).fetchone()
    return rows, None if dim is None else dim[0]


def load_table(
    connection,
    table: str,
    parquet_path: str | Path,
    chunks_path: str | Path,
    lock_timeout: str | None = None,
    skip: Collection[int] = (),
    serving: ServingSettings | None = None,
    records: str | Path | None = None,
) -> dict:
    """Make ``table`` hold the contents of ``parquet_path``; returns the marker's facts.
    ``records``: rule preflight's records index of ``chunks_path`` (see ``LoadRows``)."""
    serving = serving or ServingSettings()
    lock_timeout = lock_timeout or serving.lock_timeout
    meta = read_metadata(parquet_path)
    column = VectorColumn(column_type(meta.precision), meta.dim)
    # hashed meanwhile in a thread (hashlib lets go of the GIL): 0.15 s a 100 k x 384 file
    hashing = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    parquet_digest = hashing.submit(sha256_file, parquet_path)
    hashing.shutdown(wait=False)
    expected = row_count(parquet_path)
    rows = LoadRows(chunks_path, parquet_path, meta.precision, meta.dim, skip, records, meta.corpus_sha256)
    started = time.perf_counter()
    with connection.transaction(), connection.cursor() as cursor:
        ensure_registry(connection)
        previous, reason = served_by_workflow(cursor, table, column.sql_type)
        if reason is None:
            lock_for_writing(cursor, table, lock_timeout)
            known = table_fingerprints(cursor, table)  # one per row of the locked table
            staged = stage_hashes(cursor, rows.hashes(known))
            counts, changes = diff_changes(cursor, table, staged, serving.full_reload_above, before=len(known))
        else:
            counts, changes = first_load_counts(expected), None
        strategy, reason = choose_strategy(counts, reason, serving.full_reload_above)
        if strategy == "diff":
            diff_load(cursor, table, rows, column, counts, changes)
            index_statement = copy_rate = None
            # the locked table's rows, less and plus what diff_load checked it deleted and
            # inserted: no count(*), a scan of the whole table (seconds at 10 M rows)
            after = len(known) - counts["delete"] + counts["insert"]
        else:
            log.info("%s: full load (%s)", table, reason)
            index_statement, copy_rate = full_load(cursor, table, rows, column, serving, lock_timeout)
            after = None
        loaded, dim = count_and_dim(cursor, table, column, after)
        if loaded != expected or (loaded and dim != meta.dim):
            raise UserError(f"{table}: loaded {loaded} rows of {dim} dims, expected {expected} of {meta.dim}")
        state = table_state(cursor, table)
        changed = counts["insert"] + counts["update"] + counts["delete"] if strategy == "diff" else None
        parquet_sha256 = parquet_digest.result()
        record_load(cursor, table, meta, column, loaded, parquet_sha256, state["oid"], vectors_identity(parquet_path),
                    changed)
    seconds = time.perf_counter() - started
    if previous and previous["column_type"] != column.sql_type:
        log.warning("replaced table %s: its embedding column was %s, now %s", table, previous["column_type"], column.sql_type)
    log.info("loaded %s (%s): %d rows in %.1f s", table, strategy, loaded, seconds)
    return {
        "table": table,
        "oid": state["oid"],
        "column_type": state["column_type"],
        "rows": loaded,
        "dim": meta.dim,
        "model": meta.model,
        "precision": meta.precision,
        "parquet_sha256": parquet_sha256,
        "identity_key": vectors_identity(parquet_path),
        "strategy": strategy,
        "full_load_reason": reason,
        "inserted": counts["insert"],
        "updated": counts["update"],
        "deleted": counts["delete"],
        "unchanged": counts["keep"],
        # the index is usable when it indexes the corpus the Parquet was embedded from; a diff uses it
        "records_index": str(rows.records) if rows.records is not None else None,
        "records_index_used": rows.records is not None and strategy == "diff",
        "index_built_with_table": index_statement,
        "copy_rows_per_second": copy_rate,
        "replaced": previous["column_type"] if previous and strategy == "full" else None,
        "seconds": round(seconds, 3),
    }


def full_load(cursor, table: str, rows, column: VectorColumn, serving: ServingSettings,
              lock_timeout: str) -> tuple[str | None, float]:
    """COPY every row into ``<table>__staging``, key and index it, swap it in;
    (the index's statement, COPY rows per second)."""
    from psycopg import sql

    staging = table + STAGING_SUFFIX
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging)))
    create_table(cursor, staging, column)
    started = time.perf_counter()
    copied = 0
    with cursor.copy(copy_sql(staging)) as copy:
        copy.set_types(copy_types(column))
        for row in rows:
            copy.write_row(row)
            copied += 1
    rate = round(copied / max(time.perf_counter() - started, 1e-9), 1)
    log.info("%s: COPY %d rows (%.0f rows/s)", staging, copied, rate)
    cursor.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (id)").format(
        sql.Identifier(staging), sql.Identifier(f"{staging}{PKEY_SUFFIX}")))
    statement = index_staging(cursor, table, column, serving, copied)
    swap_in(cursor, table, statement, lock_timeout)
    return statement, rate


def main(snakemake) -> None:
    timer = Timer()
    database = DatabaseSettings.from_params(params_json(snakemake, "database"))
    table = snakemake.params.table
    serving = ServingSettings.from_params(params_json(snakemake, "serving"))
    skip = rejected_positions(snakemake.input.rejected)
    with connect(database) as connection:
        facts = load_table(connection, table, snakemake.input.parquet, snakemake.input.chunks, skip=skip,
                           serving=serving, records=snakemake.input.records)
        facts["server"] = server_versions(connection)
    facts["database"] = describe_target(database)
    facts["parquet"] = str(snakemake.input.parquet)
    write_json(snakemake.output.marker, facts)
    write_provenance(
        snakemake.output.marker,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"table": table, "database": facts["database"],
                "serving (how, not what: does not change the output)": params_json(snakemake, "serving")},
        inputs=[snakemake.input.parquet, snakemake.input.chunks, snakemake.input.rejected, snakemake.input.records,
                snakemake.input.report],
        timing=timer.stop().record(facts["rows"]),
        extra={"server": facts["server"], "corpus": {"rejected": len(skip), "rejected_file": snakemake.input.rejected},
               "plan": plan_beside_outcome(table, read_metadata(snakemake.input.parquet).corpus_sha256, facts)},
    )


def run(snakemake) -> None:
    run_rule(snakemake, main)
