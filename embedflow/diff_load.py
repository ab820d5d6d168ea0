"""A diff load: only the changed rows of a live table, in the load's one transaction.

The rows' hashes are already staged (``embedflow.table_plan.stage_hashes``), and
one join with the table (``embedflow.table_plan.diff_changes``) counted them and
brought back the rows to write (new, or with another record or vector hash) and
to delete. The client reads only the rows to write again (by byte offset in the
chunks file, by row group in the Parquet: ``embedflow.load.LoadRows.at``) and
COPYs them into a temporary table; three statements apply the diff: DELETE the
ids gone from the corpus, UPDATE the changed rows, INSERT the new ones.
Unchanged rows are not written, and the table keeps its oid and its index,
which takes the new rows in as any insert would. Readers see the old rows until
the commit."""

from __future__ import annotations

import logging

import numpy as np

from embedflow.errors import UserError
from embedflow.serving import COPY_COLUMNS, copy_sql, copy_types, create_table
from embedflow.tables import VectorColumn

log = logging.getLogger(__name__)

ROWS_TABLE = "embedflow_changed_rows"  # temporary: dropped at the end of the transaction


# A row's fingerprint: 4 bytes of its record_sha256 and 4 of its vector_sha256. The load's
# first pass compares each row's with the table's (fetched at 8 bytes a row) and keeps the
# rows the table cannot hold unchanged, so the diff need not read them again; the join of the
# full hashes on the server still decides (a fingerprint shared by chance only costs a read).
FINGERPRINT_DTYPE = np.dtype("<u8")  # record_sha256[:4] + vector_sha256[:4], as bytes


def table_fingerprints(cursor, table: str) -> np.ndarray:
    """The sorted fingerprints of ``table``'s rows, fetched as one bytea of 8 bytes a row (a
    COPY would hand them over a row at a time: 0.4 s of client calls at 100 k rows; at 10 M
    rows the value is 80 MB)."""
    from psycopg import sql

    rows, data = cursor.execute(sql.SQL(
        "SELECT count(*), string_agg(substring(record_sha256 for 4) || substring(vector_sha256 for 4), ''::bytea) "
        "FROM {}").format(sql.Identifier(table))).fetchone()
    data = data or b""
    if len(data) != FINGERPRINT_DTYPE.itemsize * rows:  # a row without a hash adds nothing to the aggregate
        raise UserError(f"{table}: a row has no record or vector hash; rerun load with a full reload")
    return np.sort(np.frombuffer(data, dtype=FINGERPRINT_DTYPE))


def lock_for_writing(cursor, table: str, lock_timeout: str) -> None:
    """One writer at a time; readers are not blocked (SHARE ROW EXCLUSIVE)."""
    from psycopg import sql

    cursor.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout)))
    cursor.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(table)))


def stage_changed_rows(cursor, rows, wanted: list, column: VectorColumn) -> int:
    """COPY ``rows`` (those ``wanted`` names) into the temporary ROWS_TABLE."""
    from psycopg import sql

    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(ROWS_TABLE)))
    create_table(cursor, ROWS_TABLE, column, temporary=True)
    copied = 0
    with cursor.copy(copy_sql(ROWS_TABLE)) as copy:
        copy.set_types(copy_types(column))
        for row in rows:
            copy.write_row(row)
            copied += 1
    if copied != len(wanted):
        raise UserError(f"the diff load found {copied} of the {len(wanted)} rows to write in the second pass")
    return copied


def apply_changes(cursor, table: str, deleted: list[str]) -> dict[str, int]:
    """DELETE ``deleted``, UPDATE and INSERT from the staged rows; the rows each touched."""
    from psycopg import sql

    names = {"table": sql.Identifier(table), "rows": sql.Identifier(ROWS_TABLE)}
    columns = [name for name in COPY_COLUMNS if name != "id"]
    # statistics of the few staged rows: the planner then joins them by the table's key, not by a scan
    cursor.execute(sql.SQL("ANALYZE {rows}").format(**names))
    cursor.execute(sql.SQL("DELETE FROM {table} WHERE id = ANY(%s)").format(**names), (deleted,))
    deleted = cursor.rowcount
    cursor.execute(sql.SQL("UPDATE {table} t SET {assignments} FROM {rows} r WHERE t.id = r.id").format(
        assignments=sql.SQL(", ").join(sql.SQL("{0} = r.{0}").format(sql.Identifier(name)) for name in columns),
        **names))
    updated = cursor.rowcount
    cursor.execute(sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT {columns} FROM {rows} r "
        "WHERE NOT EXISTS (SELECT FROM {table} t WHERE t.id = r.id)"
    ).format(columns=sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS)), **names))
    return {"insert": cursor.rowcount, "update": updated, "delete": deleted}


def diff_load(cursor, table: str, rows, column: VectorColumn, counts: dict[str, int],
              changes: list[tuple[int | None, str, str]]) -> dict[str, int]:
    """Apply ``changes`` (``embedflow.table_plan.diff_changes``) to ``table``; ``rows``: the
    load's ``LoadRows``, whose hashes were staged. Checks that what was applied is what was
    counted."""
    wanted = [(number, row_id) for number, row_id, kind in changes if kind != "delete"]
    stage_changed_rows(cursor, rows.at(wanted), wanted, column)
    applied = apply_changes(cursor, table, [row_id for _, row_id, kind in changes if kind == "delete"])
    expected = {name: counts[name] for name in applied}
    if applied != expected:
        raise UserError(f"{table}: the diff load applied {applied}, but counted {expected}; nothing was changed")
    log.info("%s: %d inserted, %d updated, %d deleted, %d unchanged", table,
             applied["insert"], applied["update"], applied["delete"], counts["keep"])
    return applied
