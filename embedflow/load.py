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
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from embedflow.atomic import write_json
from embedflow.chunks import TEXT_COLUMNS, iter_chunks
from embedflow.database import DatabaseSettings, connect, describe_target, server_versions, table_state
from embedflow.diff_load import diff_load, lock_for_writing
from embedflow.embeddings_file import iter_batches, read_metadata, row_count
from embedflow.errors import InputError, UserError
from embedflow.hashing import sha256_bytes, sha256_file, sha256_record
from embedflow.provenance import Timer, write_provenance
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
    diff_counts,
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


def _joined(chunks_path, parquet_path, skip) -> Iterator[tuple[str, dict, np.ndarray, str]]:
    """(id, chunk record, stored vector, text_sha256) in the Parquet's order.

    The Parquet holds the selected chunks in input order, a subsequence of the
    chunks file (less the positions in ``skip``, rejected by rule preflight), so
    both are streamed side by side.
    """
    chunks = iter_chunks(chunks_path, skip=skip)
    for batch in iter_batches(parquet_path):
        for chunk_id, vector, text_hash in zip(batch.ids, batch.vectors, batch.hashes):
            for chunk in chunks:
                if chunk.id == chunk_id:
                    break
            else:
                raise InputError(
                    f"{parquet_path}: id {chunk_id!r} is not in {chunks_path} (or not in the same "
                    "order); the embeddings do not belong to this chunks file: rerun embed"
                )
            yield chunk_id, chunk.record, vector, text_hash


def joined_rows(
    chunks_path: str | Path, parquet_path: str | Path, precision: str, dim: int, skip: Collection[int] = (),
    only: Collection[str] | None = None,
) -> Iterator[LoadRow]:
    """Rows for COPY: text and metadata from the chunks file, vectors from the Parquet
    (``only``: just the rows with these ids, as a diff load's second pass wants)."""
    from psycopg.types.json import Jsonb

    to_vector = _vector_value(precision, dim)
    for chunk_id, record, vector, text_hash in _joined(chunks_path, parquet_path, skip):
        if only is not None and chunk_id not in only:
            continue
        metadata = {key: value for key, value in record.items() if key not in TEXT_COLUMNS}
        yield LoadRow(chunk_id, record["content"], record.get("summary"), Jsonb(metadata), text_hash,
                      sha256_record(record), sha256_bytes(vector.tobytes()), to_vector(vector))


def row_hashes(chunks_path: str | Path, parquet_path: str | Path, skip: Collection[int] = ()
               ) -> Iterator[tuple[str, bytes, bytes]]:
    """(id, record_sha256, vector_sha256) of every row joined_rows makes, without making them."""
    for chunk_id, record, vector, _ in _joined(chunks_path, parquet_path, skip):
        yield chunk_id, sha256_record(record), sha256_bytes(vector.tobytes())


def count_and_dim(cursor, table: str, column: VectorColumn) -> tuple[int, int | None]:
    from psycopg import sql

    dim_function = "bit_length" if column.type == "bit" else "vector_dims"
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
) -> dict:
    """Make ``table`` hold the contents of ``parquet_path``; returns the marker's facts."""
    serving = serving or ServingSettings()
    lock_timeout = lock_timeout or serving.lock_timeout
    meta = read_metadata(parquet_path)
    column = VectorColumn(column_type(meta.precision), meta.dim)
    parquet_sha256 = sha256_file(parquet_path)
    expected = row_count(parquet_path)
    rows = lambda only=None: joined_rows(chunks_path, parquet_path, meta.precision, meta.dim, skip, only)  # noqa: E731
    started = time.perf_counter()
    with connection.transaction(), connection.cursor() as cursor:
        ensure_registry(connection)
        previous, reason = served_by_workflow(cursor, table, column.sql_type)
        if reason is None:
            lock_for_writing(cursor, table, lock_timeout)
            stage_hashes(cursor, row_hashes(chunks_path, parquet_path, skip))
            counts = diff_counts(cursor, table)
        else:
            counts = first_load_counts(expected)
        strategy, reason = choose_strategy(counts, reason, serving.full_reload_above)
        if strategy == "diff":
            diff_load(cursor, table, rows, column, counts)
            index_statement = copy_rate = None
        else:
            log.info("%s: full load (%s)", table, reason)
            index_statement, copy_rate = full_load(cursor, table, rows(), column, serving, lock_timeout)
        loaded, dim = count_and_dim(cursor, table, column)
        if loaded != expected or (loaded and dim != meta.dim):
            raise UserError(f"{table}: loaded {loaded} rows of {dim} dims, expected {expected} of {meta.dim}")
        state = table_state(cursor, table)
        changed = counts["insert"] + counts["update"] + counts["delete"] if strategy == "diff" else None
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
                           serving=serving)
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
        inputs=[snakemake.input.parquet, snakemake.input.chunks, snakemake.input.rejected, snakemake.input.report],
        timing=timer.stop().record(facts["rows"]),
        extra={"server": facts["server"], "corpus": {"rejected": len(skip), "rejected_file": snakemake.input.rejected},
               "plan": plan_beside_outcome(table, read_metadata(snakemake.input.parquet).corpus_sha256, facts)},
    )


def run(snakemake) -> None:
    run_rule(snakemake, main)
