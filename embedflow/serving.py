"""The serving table: its columns, the registry of loaded tables, and the atomic swap.

A full load builds ``<table>__staging`` with its primary key and its ANN index
(``<table>__staging_idx``, the definition the index rule would build) inside
one transaction, and only then, still in it, drops the old table and renames
the new one and its indexes into place. Readers see the old table, indexed,
until the commit, and the new one, indexed, after it; they name the table by
its plain name (docs/database.md, "Serving while loading"). A diff load
(``embedflow.diff_load``) changes rows of the live table in place and keeps
its index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from embedflow.index import (
    IndexSettings,
    create_index_sql,
    index_name,
    plan_for,
    put_index_in_place,
    set_build_settings,
    staging_index_name,
)
from embedflow.schema import default
from embedflow.tables import PKEY_SUFFIX, REGISTRY_TABLE, STAGING_SUFFIX, VectorColumn

log = logging.getLogger(__name__)

# (column, SQL type, COPY type) of a table, in COPY order. record_sha256 and vector_sha256
# let a diff load find unchanged rows by comparing 64 bytes a row, never the vectors.
TEXT_COLUMNS_SQL = (
    ("id", "text NOT NULL", "text"),
    ("content", "text NOT NULL", "text"),
    ("summary", "text", "text"),
    ("metadata", "jsonb NOT NULL", "jsonb"),
    ("text_sha256", "text NOT NULL", "text"),
    ("record_sha256", "bytea NOT NULL", "bytea"),
    ("vector_sha256", "bytea NOT NULL", "bytea"),
)
COPY_COLUMNS = tuple(name for name, _, _ in TEXT_COLUMNS_SQL) + ("embedding",)
HASH_COLUMNS = ("record_sha256", "vector_sha256")


@dataclass(frozen=True)
class ServingSettings:
    """What load needs besides the rows: the index to build with a new table, and when a
    diff is worth less than a rebuild (untracked params: they change how, not what)."""

    index: IndexSettings | None = None  # None: the new table gets no index (tests of load alone)
    build: dict | None = None
    full_reload_above: float = field(default_factory=lambda: default("database.full_reload_above"))
    lock_timeout: str = "60s"

    @classmethod
    def from_params(cls, params: dict) -> ServingSettings:
        return cls(IndexSettings.from_params(params["index"]), params["build"], float(params["full_reload_above"]))


def create_table(cursor, name: str, column: VectorColumn, temporary: bool = False) -> None:
    from psycopg import sql

    columns = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t, _ in TEXT_COLUMNS_SQL]
    columns.append(sql.SQL("embedding {} NOT NULL").format(sql.SQL(column.sql_type)))
    cursor.execute(sql.SQL("CREATE {}TABLE {} ({}){}").format(
        sql.SQL("TEMPORARY " if temporary else ""), sql.Identifier(name), sql.SQL(", ").join(columns),
        sql.SQL(" ON COMMIT DROP" if temporary else "")))


def copy_types(column: VectorColumn) -> list[str]:
    return [copy_type for _, _, copy_type in TEXT_COLUMNS_SQL] + [column.type]


def copy_sql(table: str, columns=COPY_COLUMNS):
    from psycopg import sql

    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))


# --- the registry -----------------------------------------------------------------


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
        # Since diff loads: the oid of the table the row describes (older registries lack it), and
        # the identity of the encoder that made its vectors, when provenance names it (a plan compares).
        # Only when missing: ALTER TABLE locks the registry against readers until the load commits.
        present = {name for (name,) in cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND NOT attisdropped",
            (REGISTRY_TABLE,))}
        # Since kept indexes carry their recall: the last measurement and the rows that diff loads
        # changed since it (embedflow.index.carried_recall).
        for name, type_ in (("oid", "bigint"), ("identity_key", "text"), ("recall", "jsonb"),
                            ("rows_changed_since_recall", "bigint")):
            if name not in present:
                cursor.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    sql.Identifier(REGISTRY_TABLE), sql.Identifier(name), sql.SQL(type_)))


def record_load(cursor, table: str, meta, column: VectorColumn, rows: int, parquet_sha256: str, oid: int,
                identity_key: str | None, changed: int | None = None) -> None:
    """Register the loaded table. ``changed``: the rows a diff load inserted, updated or
    deleted (added to those since the index's recall was measured); None for a full load,
    whose new index has no measured recall yet."""
    from psycopg import sql

    cursor.execute(
        sql.SQL(
            """INSERT INTO {} AS r (table_name, model, precision, column_type, dim, rows, parquet_sha256, oid,
                                    identity_key, recall, rows_changed_since_recall)
               VALUES (%(table)s, %(model)s, %(precision)s, %(column_type)s, %(dim)s, %(rows)s,
                       %(parquet_sha256)s, %(oid)s, %(identity_key)s, NULL, 0)
               ON CONFLICT (table_name) DO UPDATE SET model = EXCLUDED.model,
                 precision = EXCLUDED.precision, column_type = EXCLUDED.column_type,
                 dim = EXCLUDED.dim, rows = EXCLUDED.rows, oid = EXCLUDED.oid,
                 identity_key = EXCLUDED.identity_key,
                 parquet_sha256 = EXCLUDED.parquet_sha256, loaded_at = now(),
                 recall = CASE WHEN %(full)s THEN NULL ELSE r.recall END,
                 rows_changed_since_recall = CASE WHEN %(full)s THEN 0
                   ELSE coalesce(r.rows_changed_since_recall, 0) + %(changed)s END"""
        ).format(sql.Identifier(REGISTRY_TABLE)),
        {"table": table, "model": meta.model, "precision": meta.precision, "column_type": column.sql_type,
         "dim": meta.dim, "rows": rows, "parquet_sha256": parquet_sha256, "oid": oid, "identity_key": identity_key,
         "full": changed is None, "changed": changed or 0},
    )


def _has_recall_columns(cursor) -> bool:
    return cursor.execute("SELECT count(*) = 2 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname IN "
                          "('recall', 'rows_changed_since_recall')", (REGISTRY_TABLE,)).fetchone()[0]


def recall_since(cursor, table: str) -> tuple[dict | None, int]:
    """(the index's last recall measurement as store_recall kept it, rows changed since)."""
    from psycopg import sql

    if not _has_recall_columns(cursor):
        return None, 0
    row = cursor.execute(sql.SQL("SELECT recall, rows_changed_since_recall FROM {} WHERE table_name = %s").format(
        sql.Identifier(REGISTRY_TABLE)), (table,)).fetchone()
    return (None, 0) if row is None else (row[0], row[1] or 0)


def store_recall(cursor, table: str, measured: dict) -> None:
    """Keep a recall measurement with the table's registry row (none: a table this workflow
    did not load), with no rows changed since."""
    from psycopg import sql
    from psycopg.types.json import Jsonb

    if _has_recall_columns(cursor):
        cursor.execute(sql.SQL("UPDATE {} SET recall = %s, rows_changed_since_recall = 0 WHERE table_name = %s")
                       .format(sql.Identifier(REGISTRY_TABLE)), (Jsonb(measured), table))


def registered_identity(cursor, table: str) -> str | None:
    """The encoder identity key the registry records for ``table``'s vectors (None: unknown)."""
    from psycopg import sql

    if not cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (REGISTRY_TABLE,)).fetchone()[0]:
        return None
    has_column = cursor.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'identity_key'",
        (REGISTRY_TABLE,)).fetchone()[0]
    if not has_column:
        return None
    row = cursor.execute(sql.SQL("SELECT identity_key FROM {} WHERE table_name = %s").format(
        sql.Identifier(REGISTRY_TABLE)), (table,)).fetchone()
    return None if row is None else row[0]


def served_by_workflow(cursor, table: str, column_sql_type: str | None) -> tuple[dict | None, str | None]:
    """(the live table's state, None) when a diff load may change it in place, else
    (state or None, why a full load is needed)."""
    from embedflow.database import table_state

    state = table_state(cursor, table)
    if state is None:
        return None, "first load: the table does not exist"
    registered = _registered_oid(cursor, table)
    if registered != state["oid"]:
        return state, "the table was not loaded by this workflow (the registry does not name its oid)"
    hashed = cursor.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = %s AND attname = ANY(%s) AND NOT attisdropped",
        (state["oid"], list(HASH_COLUMNS))).fetchone()[0]
    if hashed != len(HASH_COLUMNS):
        return state, "the table has no row hashes (loaded by an older embedflow)"
    if column_sql_type is not None and state["column_type"] != column_sql_type:
        return state, f"the embedding column changes from {state['column_type']} to {column_sql_type}"
    return state, None


def _registered_oid(cursor, table: str) -> int | None:
    from psycopg import sql

    if not cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (REGISTRY_TABLE,)).fetchone()[0]:
        return None
    row = cursor.execute(sql.SQL("SELECT oid FROM {} WHERE table_name = %s").format(sql.Identifier(REGISTRY_TABLE)),
                         (table,)).fetchone()
    return None if row is None else row[0]


# --- a full load: the new table, indexed, then the swap -------------------------------


def index_staging(cursor, table: str, column: VectorColumn, serving: ServingSettings, rows: int) -> str | None:
    """Build on ``<table>__staging`` the index the index rule would build on ``table``;
    returns that rule's statement (what the index is compared by), None without one."""
    settings = serving.index
    if settings is None or settings.method == "none":
        return None
    plan = plan_for(column, settings)
    staging = table + STAGING_SUFFIX
    statement, _ = create_index_sql(table, plan, settings, rows)
    building, _ = create_index_sql(staging, plan, settings, rows, name=staging_index_name(table))
    if serving.build:
        set_build_settings(cursor, serving.build)
    cursor.execute(building)
    return statement.as_string(cursor)


def swap_in(cursor, table: str, index_statement: str | None, lock_timeout: str) -> None:
    """Drop ``table`` and rename its staging table, key and index into place (in the caller's
    transaction: readers wait for the commit, a moment, and then see the new table)."""
    from psycopg import sql

    staging = table + STAGING_SUFFIX
    cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(staging)))  # plans for the new rows from the start
    copy_grants(cursor, table, staging)
    cursor.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout)))
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    cursor.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(table)))
    cursor.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
        sql.Identifier(f"{staging}{PKEY_SUFFIX}"), sql.Identifier(f"{table}{PKEY_SUFFIX}")))
    if index_statement is not None:
        put_index_in_place(cursor, table, index_statement)
        log.info("%s: built %s with the new table", table, index_name(table))


def copy_grants(cursor, table: str, staging: str) -> None:
    """The privileges granted on ``table`` (a search service's SELECT), granted on its
    replacement too: a new table has only its owner's."""
    from psycopg import sql

    grants = cursor.execute(
        """SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN NULL ELSE a.grantee::regrole::text END, a.is_grantable
           FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = to_regclass(%s) AND a.grantee <> c.relowner""",
        (table,),
    ).fetchall()
    for privilege, grantee, grantable in grants:
        cursor.execute(sql.SQL("GRANT {} ON {} TO {}{}").format(
            sql.SQL(privilege), sql.Identifier(staging), sql.SQL("PUBLIC") if grantee is None else sql.SQL(grantee),
            sql.SQL(" WITH GRANT OPTION" if grantable else "")))
