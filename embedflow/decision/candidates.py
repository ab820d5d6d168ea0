"""Servable configurations of a loaded table, and the SQL a person pastes to serve one.

A candidate is one index the workflow can build on the table's embedding
column (``embedflow.index``: HNSW or IVFFlat on the column; a ``vector``
column over 2,000 dims indexed as ``(embedding::halfvec(d))``; or
``binary_quantize(embedding)::bit(d)`` of a float column, re-ranked on the
full vector) at one search setting (``hnsw.ef_search`` or
``ivfflat.probes``). The index statements come from ``embedflow.index`` and
the queries from ``embedflow.search``, so that what the report recommends is
what the workflow builds and asks. int8 is never a candidate: pgvector has no
int8 type (``embedflow.tables.column_type``).
"""

from __future__ import annotations

from dataclasses import replace

from embedflow.errors import ConfigError
from embedflow.index import IndexSettings, plan_for
from embedflow.search import SearchPlan, search_sql
from embedflow.tables import VectorColumn

TOP_K = 10
METHOD_NAMES = {"hnsw": "HNSW", "ivfflat": "IVFFlat"}


def index_candidates(column: VectorColumn, base: IndexSettings, methods: list[str],
                     binary_quantize: bool) -> tuple[list[IndexSettings], list[str]]:
    """The indexes the workflow can build on ``column``, and why any other is left out."""
    quantize_options = [False, True] if binary_quantize and column.type != "bit" else [False]
    candidates, left_out = [], []
    for method in methods:
        for quantize in quantize_options:
            settings = replace(base, method=method, binary_quantize=quantize)
            try:
                plan_for(column, settings)
            except ConfigError as error:  # too many dims for this index type
                left_out.append(f"{column.sql_type} {METHOD_NAMES[method]}: {error}")
                continue
            candidates.append(settings)
    return candidates, left_out


def search_sweep(settings: IndexSettings, options: dict, ef_search: list[int], probes: list[int]) -> list[dict]:
    """The search settings to measure an index at; probes above the index's lists search
    every list, so they are capped at lists (and the duplicates dropped)."""
    if settings.method == "hnsw":
        return [{"hnsw.ef_search": value} for value in sorted(set(ef_search))]
    return [{"ivfflat.probes": value} for value in sorted({min(p, options["lists"]) for p in probes})]


def index_label(plan: SearchPlan, settings: IndexSettings, options: dict) -> str:
    """e.g. ``vector(384) · binary_quantize → bit(384) HNSW m=16 ef_construction=64 · re-rank 100``."""
    column = plan.column
    on = column.sql_type
    if plan.binary_quantize:
        on += f" · binary_quantize → bit({column.dim})"
    elif plan.index_type != column.type:
        on += f" · as {plan.index_type}({column.dim})"
    knobs = " ".join(f"{key}={value}" for key, value in options.items())
    label = f"{on} {METHOD_NAMES[settings.method]} {knobs}"
    return label + (f" · re-rank {plan.rerank_candidates}" if plan.binary_quantize else "")


def setting_label(setting: dict) -> str:
    return " ".join(f"{name.split('.')[-1]}={value}" for name, value in setting.items())


# --- the SQL to paste -------------------------------------------------------------------


def create_table_sql(cursor, table: str) -> str:
    """CREATE TABLE for ``table`` as PostgreSQL has it (the load stage's columns and primary key)."""
    from psycopg import sql

    columns = cursor.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a
           WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (table,),
    ).fetchall()
    key = [name for (name,) in cursor.execute(
        """SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
        (table,),
    ).fetchall()]
    quote = lambda name: sql.Identifier(name).as_string(cursor)  # noqa: E731
    lines = [f"    {quote(name)} {type_} NOT NULL" if not_null else f"    {quote(name)} {type_}"
             for name, type_, not_null in columns]
    if key:
        lines.append(f"    PRIMARY KEY ({', '.join(map(quote, key))})")
    return f"CREATE TABLE {quote(table)} (\n" + ",\n".join(lines) + "\n)"


def query_sql(cursor, plan: SearchPlan, table: str, k: int = TOP_K) -> str:
    """The query the measurements ran (``embedflow.search``), with the query vector as ``$1``."""
    text = search_sql(plan, table).as_string(cursor)
    return (text.replace("%(query)s", "$1").replace("%(k)s", str(k))
            .replace("%(candidates)s", str(max(k, plan.rerank_candidates))))


def serving_sql(entry: dict, setting: dict, build_memory: str | None, note: str = "") -> str:
    """One block a person pastes into psql: table, index, search setting, the query."""
    type_ = entry["column_type"]
    build = f"SET maintenance_work_mem = '{build_memory}';  -- the extrapolated build memory\n" if build_memory else ""
    build += f"-- {note}\n" if note else ""
    settings = "".join(f"SET {name} = {value};\n" for name, value in setting.items())
    candidates = entry.get("settings", {}).get("rerank_candidates", 0)
    if entry.get("binary_quantize") and setting.get("hnsw.ef_search", candidates) < candidates:
        settings += (f"-- an HNSW scan returns at most ef_search rows: {setting['hnsw.ef_search']} candidates are "
                     f"re-ranked, not {candidates} (as measured)\n")
    return (
        f"{entry['create_table']};\n\n"
        "-- load the rows first (e.g. COPY ... FROM STDIN (FORMAT BINARY)), then build the index:\n"
        f"{build}{entry['create_index']};\n\n"
        "-- in each session that searches:\n"
        f"{settings}"
        f"PREPARE nearest({type_}) AS\n{entry['query']};\n"
        f"-- EXECUTE nearest('{example_literal(type_)}');  -- with your query vector, as the column's type\n"
    )


def example_literal(column_type: str) -> str:
    """A placeholder literal of the column's type (shortened: the real one has every dimension)."""
    return "0101…" if column_type.startswith("bit") else "[0.0123, -0.0456, …]"
