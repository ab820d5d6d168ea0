"""A diff load: only the changed rows of a live table, in the load's one transaction.

The rows' hashes are already staged (``embedflow.table_plan.stage_hashes``) and
counted. The ids to write (new, or with another record or vector hash) come
back to the client; a second pass over the Parquet COPYs only those rows into
a temporary table, and three statements apply them: DELETE the ids gone from
the corpus, UPDATE the changed rows, INSERT the new ones. Unchanged rows are not
written, and the table keeps its oid and its index, which takes the new rows
in as any insert would. Readers see the old rows until the commit.
"""

from __future__ import annotations

import logging

from embedflow.errors import UserError
from embedflow.serving import COPY_COLUMNS, copy_sql, copy_types, create_table
from embedflow.table_plan import HASHES_TABLE, changed_condition
from embedflow.tables import VectorColumn

log = logging.getLogger(__name__)

ROWS_TABLE = "embedflow_changed_rows"  # temporary: dropped at the end of the transaction


def lock_for_writing(cursor, table: str, lock_timeout: str) -> None:
    """One writer at a time; readers are not blocked (SHARE ROW EXCLUSIVE)."""
    from psycopg import sql

    cursor.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout)))
    cursor.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(table)))


def ids_to_write(cursor, table: str) -> set[str]:
    from psycopg import sql

    return {row_id for (row_id,) in cursor.execute(sql.SQL(
        "SELECT h.id FROM {hashes} h LEFT JOIN {table} t ON t.id = h.id WHERE t.id IS NULL OR {changed}"
    ).format(hashes=sql.Identifier(HASHES_TABLE), table=sql.Identifier(table),
             changed=changed_condition("compare")))}


def stage_changed_rows(cursor, rows, wanted: set[str], column: VectorColumn) -> int:
    """COPY ``rows`` (those whose id is in ``wanted``) into the temporary ROWS_TABLE."""
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


def apply_changes(cursor, table: str) -> dict[str, int]:
    """DELETE, UPDATE, INSERT from the staged tables; the rows each touched."""
    from psycopg import sql

    names = {"table": sql.Identifier(table), "hashes": sql.Identifier(HASHES_TABLE), "rows": sql.Identifier(ROWS_TABLE)}
    columns = [name for name in COPY_COLUMNS if name != "id"]
    cursor.execute(sql.SQL("DELETE FROM {table} t WHERE NOT EXISTS (SELECT FROM {hashes} h WHERE h.id = t.id)")
                   .format(**names))
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


def diff_load(cursor, table: str, rows, column: VectorColumn, counts: dict[str, int]) -> dict[str, int]:
    """Apply the staged diff to ``table``; ``rows(only)``: a fresh pass over the load's rows
    with these ids. Checks that what was applied is what was counted."""
    wanted = ids_to_write(cursor, table)
    stage_changed_rows(cursor, rows(wanted), wanted, column)
    applied = apply_changes(cursor, table)
    expected = {name: counts[name] for name in applied}
    if applied != expected:
        raise UserError(f"{table}: the diff load applied {applied}, but counted {expected}; nothing was changed")
    log.info("%s: %d inserted, %d updated, %d deleted, %d unchanged", table,
             applied["insert"], applied["update"], applied["delete"], counts["keep"])
    return applied
