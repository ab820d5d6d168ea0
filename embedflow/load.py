"""Stage ``load``: one verified embeddings file → one pgvector table, atomically.

Everything happens in one transaction: a staging table is created, filled by
psycopg 3 ``COPY … FROM STDIN (FORMAT BINARY)`` with pgvector's adapters one
Parquet batch at a time (text and metadata joined from the chunks file on
id), checked by a query, then swapped for the previous table. A failure
anywhere, a killed process included, rolls all of it back: the previous table
stays as it was and no marker is written. The table's registry row records
the sha256 of the Parquet it came from, which ``embedflow check`` compares
with the marker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np

from embedflow.atomic import write_json
from embedflow.chunks import TEXT_COLUMNS, iter_chunks
from embedflow.database import DatabaseSettings, connect, describe_target, server_versions, table_state
from embedflow.embeddings_file import iter_batches, read_metadata, row_count
from embedflow.errors import InputError, UserError
from embedflow.hashing import sha256_file
from embedflow.provenance import Timer, write_provenance
from embedflow.rejected import rejected_positions
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.tables import PKEY_SUFFIX, REGISTRY_TABLE, STAGING_SUFFIX, VectorColumn, column_type

log = logging.getLogger(__name__)

COPY_COLUMNS = ("id", "content", "summary", "metadata", "text_sha256", "embedding")


def ensure_registry(connection) -> None:
    from psycopg import sql

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('embedflow:registry'))")
        cursor.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    table_name text PRIMARY KEY,
                    model text NOT NULL,
                    precision text NOT NULL,
                    column_type text NOT NULL,
                    dim integer NOT NULL,
                    rows bigint NOT NULL,
                    parquet_sha256 text NOT NULL,
                    loaded_at timestamptz NOT NULL DEFAULT now())"""
            ).format(sql.Identifier(REGISTRY_TABLE))
        )


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


def joined_rows(
    chunks_path: str | Path, parquet_path: str | Path, precision: str, dim: int, skip: Collection[int] = ()
) -> Iterator[tuple]:
    """Rows for COPY: text and metadata from the chunks file, vectors from the Parquet.

    The Parquet holds the selected chunks in input order, a subsequence of the
    chunks file (less the positions in ``skip``, rejected by rule preflight), so
    both are streamed side by side.
    """
    from psycopg.types.json import Jsonb

    chunks = iter_chunks(chunks_path, skip=skip)
    to_vector = _vector_value(precision, dim)
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
            record = chunk.record
            metadata = {key: value for key, value in record.items() if key not in TEXT_COLUMNS}
            yield (chunk_id, record["content"], record.get("summary"), Jsonb(metadata), text_hash, to_vector(vector))


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
    lock_timeout: str = "60s",
    skip: Collection[int] = (),
) -> dict:
    """Replace ``table`` with the contents of ``parquet_path``; returns the marker's facts."""
    from psycopg import sql

    meta = read_metadata(parquet_path)
    column = VectorColumn(column_type(meta.precision), meta.dim)
    parquet_sha256 = sha256_file(parquet_path)
    staging = table + STAGING_SUFFIX
    started = time.perf_counter()
    with connection.transaction(), connection.cursor() as cursor:
        ensure_registry(connection)
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging)))
        cursor.execute(
            sql.SQL(
                """CREATE TABLE {} (
                    id text NOT NULL, content text NOT NULL, summary text,
                    metadata jsonb NOT NULL, text_sha256 text NOT NULL,
                    embedding {} NOT NULL)"""
            ).format(sql.Identifier(staging), sql.SQL(column.sql_type))
        )
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(staging), sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS))
        )
        with cursor.copy(copy_sql) as copy:
            copy.set_types(["text", "text", "text", "jsonb", "text", column.type])
            for row in joined_rows(chunks_path, parquet_path, meta.precision, meta.dim, skip):
                copy.write_row(row)
        copied = time.perf_counter() - started
        cursor.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (id)").format(
                sql.Identifier(staging), sql.Identifier(f"{staging}{PKEY_SUFFIX}")
            )
        )
        rows, dim = count_and_dim(cursor, staging, column)
        expected = row_count(parquet_path)
        if rows != expected or (rows and dim != meta.dim):
            raise UserError(f"{table}: loaded {rows} rows of {dim} dims, expected {expected} of {meta.dim}")

        previous = table_state(cursor, table)
        cursor.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout)))
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        cursor.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(table)))
        cursor.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(f"{staging}{PKEY_SUFFIX}"), sql.Identifier(f"{table}{PKEY_SUFFIX}")
            )
        )
        cursor.execute(
            sql.SQL(
                """INSERT INTO {} (table_name, model, precision, column_type, dim, rows, parquet_sha256)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (table_name) DO UPDATE SET model = EXCLUDED.model,
                     precision = EXCLUDED.precision, column_type = EXCLUDED.column_type,
                     dim = EXCLUDED.dim, rows = EXCLUDED.rows,
                     parquet_sha256 = EXCLUDED.parquet_sha256, loaded_at = now()"""
            ).format(sql.Identifier(REGISTRY_TABLE)),
            (table, meta.model, meta.precision, column.sql_type, meta.dim, rows, parquet_sha256),
        )
        state = table_state(cursor, table)
    seconds = time.perf_counter() - started
    if previous and previous["column_type"] != column.sql_type:
        log.warning("replaced table %s: its embedding column was %s, now %s", table, previous["column_type"], column.sql_type)
    elif previous:
        log.info("replaced table %s (%s)", table, column.sql_type)
    log.info("loaded %s: %d rows in %.1f s (COPY %.0f rows/s)", table, rows, seconds, rows / max(copied, 1e-9))
    return {
        "table": table,
        "oid": state["oid"],
        "column_type": state["column_type"],
        "rows": rows,
        "dim": meta.dim,
        "model": meta.model,
        "precision": meta.precision,
        "parquet_sha256": parquet_sha256,
        "replaced": previous["column_type"] if previous else None,
        "copy_rows_per_second": round(rows / max(copied, 1e-9), 1),
        "seconds": round(seconds, 3),
    }


def main(snakemake) -> None:
    timer = Timer()
    database = DatabaseSettings.from_params(params_json(snakemake, "database"))
    table = snakemake.params.table
    skip = rejected_positions(snakemake.input.rejected)
    with connect(database) as connection:
        facts = load_table(connection, table, snakemake.input.parquet, snakemake.input.chunks, skip=skip)
        facts["server"] = server_versions(connection)
    facts["database"] = describe_target(database)
    facts["parquet"] = str(snakemake.input.parquet)
    write_json(snakemake.output.marker, facts)
    write_provenance(
        snakemake.output.marker,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"table": table, "database": facts["database"]},
        inputs=[snakemake.input.parquet, snakemake.input.chunks, snakemake.input.rejected, snakemake.input.report],
        timing=timer.stop().record(facts["rows"]),
        extra={"server": facts["server"], "corpus": {"rejected": len(skip), "rejected_file": snakemake.input.rejected}},
    )


def run(snakemake) -> None:
    run_rule(snakemake, main)
