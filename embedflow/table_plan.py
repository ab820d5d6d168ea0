"""What a load will do to a table: rows to insert, update, delete and keep; diff or full.

One place decides, for ``embedflow plan`` before a run and for ``load`` itself:
the rows' hashes (``id``, ``record_sha256`` of the chunk's record and, once the
Parquet exists, ``vector_sha256`` of its vector) go by COPY into a temporary
table and are compared with the table's own hash columns in one join on the
server. That moves 64 bytes a row rather than the vectors, and the client holds
no list of 10 M ids.

A diff load is done unless the table does not exist, was not loaded by this
workflow, changes column type or dim, or more than ``full_reload_above`` of the
rows (of the ids in either the table or the corpus) change; then a full load
builds a new table with its index and swaps it in. Without torch: a plan reads
the chunks file and the database only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from embedflow.errors import UserError
from embedflow.hashing import sha256_record
from embedflow.schema import default

HASHES_TABLE = "embedflow_row_hashes"  # temporary: dropped at the end of the transaction
COUNTS = ("insert", "update", "delete", "keep")


def record_hashes(chunks: Iterable) -> Iterator[tuple[str, bytes, None]]:
    """(id, record_sha256, no vector hash) of each chunk (``embedflow.chunks.Chunk``): what a
    plan knows before the embeddings exist."""
    for chunk in chunks:
        yield chunk.id, sha256_record(chunk.record), None


def stage_hashes(cursor, rows: Iterable[tuple[str, bytes, bytes | None]]) -> int:
    """COPY the rows' (id, record_sha256, vector_sha256) into the temporary HASHES_TABLE,
    each with its row number (its place in ``rows``: a diff load reads the rows it writes
    again by number)."""
    from psycopg import sql

    name = sql.Identifier(HASHES_TABLE)
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    cursor.execute(sql.SQL("CREATE TEMPORARY TABLE {} (id text NOT NULL, record_sha256 bytea NOT NULL, "
                           "vector_sha256 bytea, row_number bigint NOT NULL) ON COMMIT DROP").format(name))
    copied = 0
    encoding = cursor.connection.info.encoding
    rows = iter(rows)
    with cursor.copy(sql.SQL("COPY {} (id, record_sha256, vector_sha256, row_number) FROM STDIN (FORMAT BINARY)"
                             ).format(name)) as copy:
        copy.write(_COPY_SIGNATURE)
        while block := list(islice(rows, 4096)):
            copy.write(_binary_hash_rows(block, copied, encoding))
            copied += len(block)
        copy.write(_COPY_TRAILER)
    # no key and no ANALYZE (0.35 s at 100 k rows): the staged rows are only ever FULL JOINed
    # (a hash or merge join, whatever the statistics), and a load checks the ids are unique
    return copied


# Binary COPY written in blocks: psycopg's write_row, a few µs a row, was most of a diff
# load's client time at 100 k rows. Each row: its field count, then each field's length
# (-1: NULL) and bytes.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + bytes(8)  # the signature, flags 0, no header extension
_COPY_TRAILER = b"\xff\xff"
_FIELD_LENGTH = struct.Struct(">i")
_ROW_START = struct.Struct(">hi")  # 4 fields; the id's length
_ROW_END = struct.Struct(">iq")  # the row number's length (8) and value
_NULL_FIELD = _FIELD_LENGTH.pack(-1)


def _binary_hash_rows(rows: list[tuple[str, bytes, bytes | None]], first: int, encoding: str) -> bytes:
    length, start, end = _FIELD_LENGTH.pack, _ROW_START.pack, _ROW_END.pack
    out = []
    for number, (chunk_id, record_hash, vector_hash) in enumerate(rows, first):
        encoded = chunk_id.encode(encoding)
        out += (start(4, len(encoded)), encoded, length(len(record_hash)), record_hash,
                _NULL_FIELD if vector_hash is None else length(len(vector_hash)) + vector_hash, end(8, number))
    return b"".join(out)


def changed_condition(vectors: str):
    """When a row present on both sides changes: ``vectors`` is "compare" (the Parquet's
    hashes are staged), "same" (a plan: unchanged text keeps its vector) or "all" (a plan
    for a model whose identity changed: every vector changes)."""
    from psycopg import sql

    if vectors == "all":
        return sql.SQL("true")
    condition = "t.record_sha256 <> h.record_sha256"
    if vectors == "compare":
        condition += " OR t.vector_sha256 <> h.vector_sha256"
    return sql.SQL(condition)


def diff_counts(cursor, table: str, vectors: str = "compare") -> dict[str, int]:
    """Rows to insert, update, delete and keep: the staged hashes against ``table``'s."""
    from psycopg import sql

    changed = changed_condition(vectors)
    row = cursor.execute(sql.SQL(
        """SELECT count(*) FILTER (WHERE t.id IS NULL),
                  count(*) FILTER (WHERE t.id IS NOT NULL AND h.id IS NOT NULL AND ({changed})),
                  count(*) FILTER (WHERE h.id IS NULL),
                  count(*) FILTER (WHERE t.id IS NOT NULL AND h.id IS NOT NULL AND NOT ({changed}))
           FROM {hashes} h FULL JOIN {table} t ON t.id = h.id"""
    ).format(changed=changed, hashes=sql.Identifier(HASHES_TABLE), table=sql.Identifier(table))).fetchone()
    return dict(zip(COUNTS, row))


def diff_changes(cursor, table: str, staged: int, full_reload_above: float, before: int | None = None
                 ) -> tuple[dict[str, int], list[tuple[int | None, str, str]] | None]:
    """A load's diff in one join of the staged hashes (``staged`` rows) with ``table``:
    (counts, changes), changes being (row number, id, "insert" | "update" | "delete"; row
    number None for a delete) of every row to write or delete. When more rows change than
    ``full_reload_above`` of both sides together, a full load is due whatever the exact share:
    changes is None, and the counts come from ``diff_counts``. ``before``: the table's row
    count, when the caller counted it in this transaction with writers locked out (a scan
    of the table less)."""
    from psycopg import sql

    names = {"hashes": sql.Identifier(HASHES_TABLE), "table": sql.Identifier(table)}
    if before is None:
        before = cursor.execute(sql.SQL("SELECT count(*) FROM {table}").format(**names)).fetchone()[0]
    limit = int(full_reload_above * (staged + before)) + 1
    changes = cursor.execute(sql.SQL(
        """SELECT h.row_number, coalesce(h.id, t.id),
                  CASE WHEN t.id IS NULL THEN 'insert' WHEN h.id IS NULL THEN 'delete' ELSE 'update' END
           FROM {hashes} h FULL JOIN {table} t ON t.id = h.id
           WHERE t.id IS NULL OR h.id IS NULL OR {changed} LIMIT %s"""
    ).format(changed=changed_condition("compare"), **names), (limit,)).fetchall()
    if len(changes) == limit:
        return diff_counts(cursor, table), None
    counts = {name: 0 for name in COUNTS}
    for _, _, kind in changes:
        counts[kind] += 1
    counts["keep"] = staged - counts["insert"] - counts["update"]
    if counts["keep"] != before - counts["delete"] - counts["update"]:  # an id staged twice
        raise UserError(f"{table}: the rows to load do not have unique ids (the join of {staged:,} staged rows "
                        f"with {before:,} in the table does not add up); rerun verify")
    return counts, changes


def choose_strategy(counts: dict[str, int], reason: str | None, full_reload_above: float) -> tuple[str, str | None]:
    """("diff" | "full", why a full load). ``reason``: why a diff cannot be done at all."""
    if reason:
        return "full", reason
    changed = counts["insert"] + counts["update"] + counts["delete"]
    union = changed + counts["keep"]
    share = changed / union if union else 0.0
    if share > full_reload_above:
        return "full", (f"{changed:,} of {union:,} rows change ({share:.0%}), more than "
                        f"database.full_reload_above ({full_reload_above:.0%}): rebuilding is cheaper")
    return "diff", None


def first_load_counts(rows: int) -> dict[str, int]:
    return {"insert": rows, "update": 0, "delete": 0, "keep": 0}


def plan_table(
    rows: Iterable[tuple[str, bytes, bytes | None]] | None = None,
    database=None,
    table: str | None = None,
    *,
    column_type: str | None = None,
    vectors_change: bool = False,
    full_reload_above: float | None = None,
    index_method: str | None = None,
) -> dict:
    """What loading ``rows`` into ``table`` will do, without changing anything.

    ``rows``: (id, record_sha256, vector_sha256 or None) of every row the table will hold,
    e.g. ``record_hashes(chunks)`` before the run or ``parquet_row_hashes(...)`` after embed.
    ``database``: a ``DatabaseSettings`` (connected to, and left) or an open connection.
    ``column_type``: the column the load will make (``vector(384)``), when known.
    ``vectors_change``: the model's identity differs from the one that made the table's
    vectors, so every row's vector changes (when hashes of vectors are not given).

    ``embedflow plan`` plans every servable table of a config at once through
    ``plan_servable_tables`` (the corpus read and staged once).
    """
    from embedflow.database import DatabaseSettings, connect

    if isinstance(database, DatabaseSettings):
        with connect(database) as connection:
            return plan_table(rows, connection, table, column_type=column_type, vectors_change=vectors_change,
                              full_reload_above=full_reload_above, index_method=index_method)
    options = {"full_reload_above": full_reload_above, "index_method": index_method}
    return plan_tables(rows, database, [(table, column_type, None, vectors_change)], **options)[0]


def plan_tables(rows, connection, tables: list[tuple], *, full_reload_above: float | None = None,
                index_method: str | None = None, index_settings=None) -> list[dict]:
    """plan_table for several tables that will hold the same ``rows`` (one model's tables at
    each precision, or every model's): the rows are read and staged once. ``tables``:
    (table, column_type, encoder identity key or None, vectors_change) each; with an identity
    key, the vectors change when the registry records another one for the table."""
    full_reload_above = default("database.full_reload_above") if full_reload_above is None else full_reload_above
    index_method = default("index.method") if index_method is None else index_method
    # a plan changes nothing, its temporary table included: rolled back whatever happens
    with connection.transaction(force_rollback=True), connection.cursor() as cursor:
        staged = stage_hashes(cursor, rows)
        vectors_staged = _vectors_staged(cursor)
        return [_plan_one(cursor, table, staged, column_type, identity, vectors_change, vectors_staged,
                          full_reload_above, index_method, index_settings)
                for table, column_type, identity, vectors_change in tables]


def _plan_one(cursor, table: str, staged: int, column_type, identity: str | None, vectors_change: bool,
              vectors_staged: bool, full_reload_above: float, index_method: str, index_settings=None) -> dict:
    from embedflow.serving import registered_identity, served_by_workflow

    state, reason = served_by_workflow(cursor, table, column_type)
    loaded_by = registered_identity(cursor, table) if state is not None else None
    vectors_change = vectors_change or bool(identity and loaded_by and identity != loaded_by)
    if reason is not None:  # a new table: every row inserted
        counts = first_load_counts(staged)
    else:
        counts = diff_counts(cursor, table, "all" if vectors_change else "compare" if vectors_staged else "same")
    strategy, reason = choose_strategy(counts, reason, full_reload_above)
    encoder = ("another encoder than the table's" if vectors_change else "the table's encoder"
               if identity and identity == loaded_by else "unknown (assumed the table's)")
    fate = index_fate(strategy, index_method, state is not None)
    if fate == "kept" and index_settings is not None:
        from embedflow.index import index_kept

        if not index_kept(cursor, table, index_settings, counts["keep"] + counts["insert"] + counts["update"]):
            fate = "rebuilt by rule index: the live index is not the one the index settings ask for"
    return {"table": table, "strategy": strategy, "reason": reason, **counts, "index": fate, "encoder": encoder}


def _vectors_staged(cursor) -> bool:
    from psycopg import sql

    query = sql.SQL("SELECT bool_and(vector_sha256 IS NOT NULL) FROM {}").format(sql.Identifier(HASHES_TABLE))
    return bool(cursor.execute(query).fetchone()[0])


def index_fate(strategy: str, index_method: str, table_exists: bool) -> str:
    """What happens to the index: kept (a diff load), built with a new table (and swapped in
    with it), or none. The index rule may still rebuild it when its settings changed."""
    if index_method == "none":
        return "none"
    if strategy == "diff":
        return "kept"
    return "rebuilt with the new table" if table_exists else "built with the table"


def parquet_row_hashes(chunks_path: str | Path, parquet_path: str | Path, skip=()) -> Iterator[tuple[str, bytes, bytes]]:
    """(id, record_sha256, vector_sha256) of every row a load of ``parquet_path`` makes: the
    exact plan once the embeddings exist (the load computes the same)."""
    from embedflow.load import row_hashes

    return row_hashes(chunks_path, parquet_path, skip)


# --- every servable table of a workflow config (for `embedflow plan`) -------------------


def corpus_rows(config: dict, skip=()) -> Iterator[tuple[str, bytes, None]]:
    """record_hashes of the chunks embed will embed: the chunks file less ``skip`` (rule
    preflight's rejected positions), and in test mode its sample, in input order."""
    from embedflow.chunks import iter_chunks, select_positions, validate_chunks

    test_mode = config["test_mode"]
    corpus = validate_chunks(config["chunks"], config["text_field"], skip=skip)
    positions = select_positions(corpus.count, test_mode["max_chunks"], test_mode["sample"], test_mode["seed"], skip)
    return record_hashes(iter_chunks(config["chunks"], config["text_field"], positions, skip))


def plan_servable_tables(config: dict, identities: dict[str, str | None] | None = None,
                         skip: frozenset[int] | None = None) -> list[dict]:
    """plan_table for every model × precision pgvector can hold (``config`` as
    ``embedflow.config_file.load_config`` reads it), each with ``model`` and ``precision``.
    ``identities``: per model key, its encoder identity key (absent: computed by
    ``embedflow.identity`` where it can be, without torch); every row's vector changes when
    the registry records another identity for the table. ``skip``: the positions of the
    rejected chunks (absent: from rule preflight's file, when it exists). Without a database
    yet (no pgdata), every table is a first load."""
    from embedflow.database import DatabaseSettings, connect
    from embedflow.paths import rejected_path
    from embedflow.rejected import rejected_positions
    from embedflow.tables import COLUMN_TYPES, table_name
    from embedflow.variants import resolve

    database = config["database"]
    settings = DatabaseSettings(pgdata=database["pgdata"], dsn_env=database["dsn_env"])
    rejected = rejected_path(config["chunks"])
    if skip is None:
        skip = rejected_positions(rejected) if Path(rejected).exists() else frozenset()
    wanted, names = [], []
    for key in config["models"]:
        spec = resolve(config["models"], key)
        dim = spec["variant"]["dim"] if spec["variant"] else spec["truncate_dim"]
        identity = (identities or {}).get(key) or encoder_identity_key(spec)
        for precision in (p for p in config["precisions"] if p in COLUMN_TYPES):
            column = f"{COLUMN_TYPES[precision]}({dim})" if dim else None
            wanted.append((table_name(database["table"], key, precision), column, identity, False))
            names.append({"model": key, "precision": precision})
    options = {"full_reload_above": database["full_reload_above"], "index_method": config["index"]["method"]}
    if not settings.dsn_env and not Path(settings.pgdata).exists():
        rows = sum(1 for _ in corpus_rows(config, skip))
        plans = [{"table": table, "strategy": "full", "reason": "first load: no database yet",
                  **first_load_counts(rows), "index": index_fate("full", options["index_method"], False)}
                 for table, *_ in wanted]
    else:
        from embedflow.index import IndexSettings

        with connect(settings) as connection:
            plans = plan_tables(corpus_rows(config, skip), connection, wanted, **options,
                                index_settings=IndexSettings.from_params(config["index"]))
    return [{**name, **plan} for name, plan in zip(names, plans)]


def encoder_identity_key(spec: dict) -> str | None:
    """The key the vector cache files this encoder's vectors under (``embedflow.identity``,
    without torch); None for a variant (its vectors are its base's, reduced) or where the
    identity is not known before a run (a hub model not downloaded yet)."""
    if spec.get("variant"):
        return None
    try:
        from embedflow.config import model_output_slice
        from embedflow.identity import encoder_identity, identity_key, is_resolved
    except ImportError:  # a branch without the vector cache
        return None
    identity = encoder_identity(model_output_slice(spec))
    return identity_key(identity) if is_resolved(identity) else None


def vectors_identity(parquet_path: str | Path) -> str | None:
    """The encoder identity key of an embeddings file's vectors, from provenance: embed's
    (the vector cache's key), through convert's to the float32 file it read; None when
    provenance does not say (no cache, a variant's projection, no provenance)."""
    import json

    from embedflow.provenance import provenance_path

    try:
        record = json.loads(provenance_path(parquet_path).read_text())
    except (OSError, ValueError):
        return None
    if record.get("rule") == "convert" and record.get("inputs"):
        return vectors_identity(record["inputs"][0]["path"])
    if record.get("rule") == "embed":
        return (record.get("cache") or {}).get("identity_key")
    return None


def plan_beside_outcome(table: str, corpus_sha256: str, facts: dict, path: str | Path | None = None) -> dict | None:
    """What the saved plan (``embedflow plan``, results/plan.json) predicted for ``table`` on
    this corpus, beside what the load did; None without such a plan."""
    import json

    from embedflow import paths

    path = Path(path or getattr(paths, "PLAN", "results/plan.json"))
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    predicted = (plan.get("tables") or {}).get(table)
    if plan.get("corpus", {}).get("sha256") != corpus_sha256 or not predicted:
        return None
    keys = ("strategy", *COUNTS)
    outcome = {"strategy": facts["strategy"], "insert": facts["inserted"], "update": facts["updated"],
               "delete": facts["deleted"], "keep": facts["unchanged"]}
    predicted = {key: predicted.get(key) for key in keys}
    return {"planned_at": plan.get("planned_at"), "predicted": predicted, "outcome": outcome,
            "agree": predicted == outcome}
