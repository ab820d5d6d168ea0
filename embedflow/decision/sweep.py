"""Rule ``sweep``: every servable index × search setting of one loaded table, through real SQL.

The loaded table is copied into the schema ``embedflow_sweep`` under its own
name, with the ``CREATE TABLE`` the report will recommend (so its bytes per
row are those of that DDL), and each candidate index is built there, one at
a time, with the index stage's own statement (``embedflow.index``), measured
and dropped. The workflow's table and index are never touched, so
``evaluate`` can read them meanwhile, and a copy in another schema gives
``pg_get_indexdef`` definitions that differ from a fresh table's only by the
schema. Per index: build seconds, bytes, the bytes of its indexed value, and
whether the planner uses it; per search setting: nDCG@10 and recall@10 per
query (the decision's bootstrap resamples them), ANN recall@10 against exact
search on the same table, p50 / p95 latency.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from embedflow.atomic import write_json
from embedflow.decision.candidates import (
    TOP_K,
    create_table_sql,
    index_candidates,
    index_label,
    query_sql,
    search_sweep,
    setting_label,
)
from embedflow.errors import UserError
from embedflow.index import IndexSettings, column_of, create_index_sql, index_name, plan_for
from embedflow.metrics import ndcg_at, percentiles, recall_at
from embedflow.provenance import Timer, write_provenance
from embedflow.search import SearchPlan, search
from embedflow.snakemake_rule import params_json, run_rule

log = logging.getLogger(__name__)
SCHEMA = "embedflow_sweep"
FORCE_INDEX = {"enable_seqscan": "off"}  # measure the index, not the planner's choice on a small table
VALUE_SAMPLE = 1000  # rows whose stored vector sizes are averaged


class Queries:
    """The evaluation queries: ids, float32 vectors and relevant chunk ids."""

    def __init__(self, ids: list[str], vectors: np.ndarray, relevant: dict[str, set[str]]):
        self.ids, self.vectors, self.relevant = ids, vectors, relevant

    @classmethod
    def read(cls, queries_path, vectors_path, corpus_ids: set[str]) -> Queries:
        from embedflow.embeddings_file import read_all
        from embedflow.errors import InputError
        from embedflow.evaluate import answerable
        from embedflow.query_set import read_queries

        ids, _, relevant = read_queries(queries_path)
        _, encoded = read_all(vectors_path)
        if encoded.ids != ids:
            raise InputError(f"{vectors_path} does not match {queries_path}: rerun encode_queries")
        ids, vectors, relevant, _ = answerable(ids, encoded.vectors.astype(np.float32), relevant, corpus_ids)
        return cls(ids, vectors, relevant)


# --- the copy ------------------------------------------------------------------------


def _scalar(connection, query: str, params=()):
    with connection.cursor() as cursor:
        value = cursor.execute(query, params).fetchone()[0]
    connection.commit()
    return value


def copy_table(connection, table: str) -> str:
    """Copy ``table`` into SCHEMA under the same name; returns the CREATE TABLE that made the copy."""
    from psycopg import sql

    source = _scalar(connection, "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE c.oid = to_regclass(%s)", (table,))
    if source is None:
        raise UserError(f"table {table} does not exist: run the load first")
    vector_schema = _scalar(connection, "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
    with connection.transaction(), connection.cursor() as cursor:
        create_table = create_table_sql(cursor, table)
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('embedflow:sweep schema'))")
        cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SCHEMA, table)))
        # Unqualified names now mean the copy; pgvector's types and operators stay visible.
        cursor.execute(sql.SQL("SET search_path = {}, {}").format(sql.Identifier(SCHEMA), sql.Identifier(vector_schema)))
        cursor.execute(create_table)
        cursor.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(sql.Identifier(SCHEMA, table),
                                                                        sql.Identifier(source, table)))
        cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(SCHEMA, table)))
    if _scalar(connection, "SELECT to_regclass(%s) = %s::regclass", (table, f"{SCHEMA}.{table}")) is not True:
        raise UserError(f"{table} does not resolve to the copy {SCHEMA}.{table}; refusing to build indexes")
    return create_table


def drop_copy(connection, table: str) -> None:
    """Drop the copy, and the schema once no sweep holds a table in it (under the lock that creates them)."""
    from psycopg import sql

    connection.rollback()
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('embedflow:sweep schema'))")
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SCHEMA, table)))
        left = cursor.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = %s", (SCHEMA,)).fetchone()[0]
        if not left:
            cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(SCHEMA)))
        cursor.execute("RESET search_path")  # unqualified names mean the workflow's tables again


def table_facts(connection, table: str, column) -> dict:
    from psycopg import sql

    copy = sql.Identifier(SCHEMA, table)
    with connection.cursor() as cursor:
        rows = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(copy)).fetchone()[0]
        embedding_bytes = cursor.execute(sql.SQL("SELECT avg(pg_column_size(embedding)) FROM (SELECT embedding FROM {} "
                                                 "LIMIT %s) s").format(copy), (VALUE_SAMPLE,)).fetchone()[0]
        table_bytes, key_bytes = cursor.execute(
            """SELECT pg_table_size(%(t)s::regclass), coalesce((SELECT sum(pg_relation_size(indexrelid))
               FROM pg_index WHERE indrelid = %(t)s::regclass), 0)""", {"t": f"{SCHEMA}.{table}"}).fetchone()
    connection.commit()
    return {"table": table, "column_type": column.sql_type, "dim": column.dim, "rows": rows,
            "table_bytes": table_bytes, "primary_key_bytes": int(key_bytes),
            "embedding_bytes_per_row": float(embedding_bytes)}


# --- measuring ---------------------------------------------------------------------------


def exact_neighbours(connection, column, metric: str, table: str, queries: Queries) -> dict[str, list[tuple]]:
    """Per query, the exact k × 10 nearest (id, distance) by the column's metric: the ground truth."""
    plan = SearchPlan(column, column.type, metric)
    return {query_id: [(hit[0], hit[1]) for hit in search(connection, plan, table, vector, TOP_K * 10, exact=True)]
            for query_id, vector in zip(queries.ids, queries.vectors)}


def ann_recall(ranked: list[str], exact: list[tuple], k: int = TOP_K) -> float:
    """Share of the exact top k found; a hit tied with the k-th exact distance counts (Hamming ties)."""
    if not exact:
        return math.nan
    threshold = exact[min(k, len(exact)) - 1][1]
    distance = dict(exact)
    found = sum(1 for row_id in ranked[:k] if distance.get(row_id, math.inf) <= threshold + 1e-6)
    return found / min(k, len(exact))


def measure_search(connection, plan: SearchPlan, table: str, setting: dict, queries: Queries,
                   exact: dict[str, list[tuple]]) -> dict:
    forced = {**setting, **FORCE_INDEX}
    search(connection, plan, table, queries.vectors[0], TOP_K, settings=forced)  # warm-up, not counted
    ndcg, recall, overlap, latencies = [], [], [], []
    for query_id, vector in zip(queries.ids, queries.vectors):
        started = time.perf_counter()
        hits = search(connection, plan, table, vector, TOP_K, settings=forced)
        latencies.append((time.perf_counter() - started) * 1000)
        ranked = [hit[0] for hit in hits]
        ndcg.append(round(ndcg_at(ranked, queries.relevant[query_id], TOP_K), 6))
        recall.append(round(recall_at(ranked, queries.relevant[query_id], TOP_K), 6))
        overlap.append(ann_recall(ranked, exact[query_id]))
    return {"setting": setting, "label": setting_label(setting), "ndcg@10": ndcg, "recall@10": recall,
            "ann_recall@10": float(np.nanmean(overlap)), "latency": percentiles(latencies)}


def uses_index(connection, plan: SearchPlan, table: str, setting: dict, vector: np.ndarray) -> bool:
    """Whether the planner answers the search through the index (EXPLAIN, with seq scans off)."""
    import json

    from embedflow.search import query_value, search_sql

    params = {"query": query_value(plan.column, vector), "k": TOP_K, "candidates": max(TOP_K, plan.rerank_candidates)}
    with connection.transaction(), connection.cursor() as cursor:
        for name, value in {**setting, **FORCE_INDEX}.items():
            cursor.execute("SELECT set_config(%s, %s, true)", (name, str(value)))
        explained = cursor.execute(b"EXPLAIN (FORMAT JSON) " + search_sql(plan, table).as_bytes(cursor), params)
        text = json.dumps(explained.fetchone()[0])
    return f'"Index Name": "{index_name(table)}"' in text


def build(connection, statement, build_settings: dict) -> tuple[float, list[str]]:
    """Run one CREATE INDEX with the build settings; (seconds, pgvector's notices)."""
    notices: list[str] = []
    handler = lambda diagnostic: notices.append(diagnostic.message_primary)  # noqa: E731
    connection.add_notice_handler(handler)
    started = time.perf_counter()
    try:
        with connection.transaction(), connection.cursor() as cursor:
            for name in ("maintenance_work_mem", "max_parallel_maintenance_workers"):
                cursor.execute("SELECT set_config(%s, %s, true)", (name, str(build_settings[name])))
            cursor.execute(statement)
    finally:
        connection.remove_notice_handler(handler)
    return round(time.perf_counter() - started, 3), notices


def index_facts(connection, table: str, plan: SearchPlan) -> dict:
    from psycopg import sql

    with connection.cursor() as cursor:
        definition, size = cursor.execute(
            "SELECT pg_get_indexdef(%(i)s::regclass), pg_relation_size(%(i)s::regclass)",
            {"i": f"{SCHEMA}.{index_name(table)}"},
        ).fetchone()
        value_bytes = cursor.execute(sql.SQL("SELECT avg(pg_column_size({})) FROM (SELECT embedding FROM {} LIMIT %s) s")
                                     .format(sql.SQL(plan.expression), sql.Identifier(SCHEMA, table)),
                                     (VALUE_SAMPLE,)).fetchone()[0]
    connection.commit()
    return {"definition": definition, "index_bytes": size, "indexed_value_bytes": float(value_bytes)}


def measure_index(connection, table: str, rows: int, column, settings: IndexSettings, sweep: dict,
                  build_settings: dict, queries: Queries, exact: dict) -> dict:
    from psycopg import sql

    plan = plan_for(column, settings)
    statement, options = create_index_sql(table, plan, settings, rows)
    with connection.cursor() as cursor:
        create_index, query = statement.as_string(cursor), query_sql(cursor, plan, table)
    seconds, notices = build(connection, statement, build_settings)
    facts = index_facts(connection, table, plan)
    settings_record = {name: getattr(settings, name) for name in
                       ("method", "metric", "m", "ef_construction", "lists", "binary_quantize", "rerank_candidates")}
    entry = {
        "label": index_label(plan, settings, options), "settings": settings_record, "options": options,
        "index_type": plan.index_type, "metric": plan.metric, "binary_quantize": plan.binary_quantize,
        "dim": column.dim, "create_index": create_index, "query": query, **facts,
        "build_seconds": seconds, "build_notices": notices,
    }
    sweep_settings = search_sweep(settings, options, sweep["ef_search"], sweep["probes"])
    entry["uses_index"] = uses_index(connection, plan, table, sweep_settings[0], queries.vectors[0])
    entry["searches"] = [measure_search(connection, plan, table, setting, queries, exact) for setting in sweep_settings]
    for search_entry in entry["searches"]:  # every list searched: an exact scan, whatever lists the target needs
        search_entry["exhaustive"] = search_entry["setting"].get("ivfflat.probes", 0) >= options.get("lists", math.inf)
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(SCHEMA, index_name(table))))
    log.info("%s: %s built in %.2f s, %d B; %d search settings", table, entry["label"], seconds,
             facts["index_bytes"], len(entry["searches"]))
    return entry


def sweep_table(connection, table: str, sweep: dict, build_settings: dict, queries: Queries) -> dict:
    """Measure every candidate of ``table`` on a copy of it; the copy is dropped afterwards."""
    with connection.cursor() as cursor:
        column = column_of(cursor, table)
    connection.commit()
    base = IndexSettings.from_params(sweep["index"])
    candidates, left_out = index_candidates(column, base, sweep["methods"], sweep["binary_quantize"])
    try:
        create_table = copy_table(connection, table)
        facts = table_facts(connection, table, column)
        exact = exact_neighbours(connection, column, base.metric if column.type != "bit" else "hamming", table, queries)
        indexes = [measure_index(connection, table, facts["rows"], column, settings, sweep, build_settings,
                                 queries, exact) for settings in candidates]
    finally:
        drop_copy(connection, table)
    return {**facts, "create_table": create_table, "queries": queries.ids, "indexes": indexes, "left_out": left_out}


def table_ids(connection, table: str) -> set[str]:
    from psycopg import sql

    with connection.cursor() as cursor:
        ids = {row[0] for row in cursor.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(table)))}
    connection.commit()
    return ids


def main(snakemake) -> None:
    from embedflow.database import DatabaseSettings, connect, server_versions

    timer = Timer()
    sweep = params_json(snakemake, "sweep")
    build_settings = params_json(snakemake, "build")
    database = DatabaseSettings.from_params(params_json(snakemake, "database"))
    table = snakemake.params.table
    with connect(database) as connection:
        queries = Queries.read(snakemake.input.queries, snakemake.input.query_vectors, table_ids(connection, table))
        report = sweep_table(connection, table, sweep, build_settings, queries)
        report["server"] = server_versions(connection)
    report = {**dict(snakemake.wildcards), **report}
    write_json(snakemake.output.report, report)
    searched = sum(len(index["searches"]) for index in report["indexes"]) * len(queries.ids)
    write_provenance(
        snakemake.output.report, rule=snakemake.rule, wildcards=dict(snakemake.wildcards),
        config={"sweep": sweep, "table": table, "build (does not change the output)": build_settings},
        inputs=[snakemake.input.loaded, snakemake.input.queries, snakemake.input.query_vectors],
        timing=timer.stop().record(searched, unit="queries"), extra={"server": report["server"]},
    )


def run(snakemake) -> None:
    run_rule(snakemake, main)
