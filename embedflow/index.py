"""Stage ``index``: build the ANN index of a loaded table and measure its recall.

A full load builds the index with the new table (``embedflow.serving``), and a
diff load keeps it; this stage then finds the live index with the definition
the settings ask for, keeps it and only re-measures it. When the definition
changed it builds the new index beside the old one (``<table>__staging_idx``,
``maintenance_work_mem`` and parallel maintenance workers set for the build)
and, in the same transaction, drops the old one and renames the new one into
its place: readers keep using the old index until the commit, then the new
one, never none. The table itself is never touched: changing index settings
rebuilds the index, never reloads rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedflow.atomic import write_json
from embedflow.database import DatabaseSettings, connect, describe_target, server_versions
from embedflow.errors import ConfigError, UserError
from embedflow.provenance import Timer, write_provenance
from embedflow.schema import defaults
from embedflow.search import SearchPlan, search
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.tables import INDEX_SUFFIX, STAGING_INDEX_SUFFIX, VectorColumn

log = logging.getLogger(__name__)

METHODS = ("hnsw", "ivfflat", "none")


_DEFAULTS = defaults("index")  # config/config.schema.yaml is where defaults are written


@dataclass(frozen=True)
class IndexSettings:
    method: str = _DEFAULTS["method"]
    metric: str = _DEFAULTS["metric"]
    m: int = _DEFAULTS["m"]
    ef_construction: int = _DEFAULTS["ef_construction"]
    lists: int | str = _DEFAULTS["lists"]
    halfvec_for_large: bool = _DEFAULTS["halfvec_for_large"]
    binary_quantize: bool = _DEFAULTS["binary_quantize"]
    ef_search: int = _DEFAULTS["ef_search"]
    probes: int | str = _DEFAULTS["probes"]
    rerank_candidates: int = _DEFAULTS["rerank_candidates"]
    recall_sample: int = _DEFAULTS["recall_sample"]
    seed: int = _DEFAULTS["seed"]

    @classmethod
    def from_params(cls, params: dict) -> IndexSettings:
        known = {name: params[name] for name in cls.__dataclass_fields__ if name in params}
        settings = cls(**known)
        if settings.method not in METHODS:
            raise ConfigError(f"index.method must be one of {METHODS}, got {settings.method!r}")
        return settings


def auto_lists(rows: int) -> int:
    """pgvector's advice: rows / 1000 up to 1 M rows, sqrt(rows) beyond."""
    return max(1, rows // 1000) if rows <= 1_000_000 else int(math.sqrt(rows))


def auto_probes(lists: int) -> int:
    return max(1, int(math.sqrt(lists)))


def index_name(table: str) -> str:
    return f"{table}{INDEX_SUFFIX}"


def staging_index_name(table: str) -> str:
    """The index of ``table`` while it is built, before it takes index_name(table)'s place."""
    return f"{table}{STAGING_INDEX_SUFFIX}"


def column_of(cursor, table: str) -> VectorColumn:
    row = cursor.execute(
        """SELECT t.typname, a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding'""",
        (table,),
    ).fetchone()
    if row is None:
        raise UserError(f"table {table} does not exist or has no embedding column: run the load first")
    return VectorColumn(row[0], row[1])


def plan_for(column: VectorColumn, settings: IndexSettings) -> SearchPlan:
    quantize = settings.binary_quantize and column.type != "bit"
    index_type = "bit" if quantize else column.index_type(settings.halfvec_for_large)
    return SearchPlan(
        column=column,
        index_type=index_type,
        metric=column.metric(settings.metric),
        binary_quantize=quantize,
        rerank_candidates=settings.rerank_candidates,
    )


def create_index_sql(table: str, plan: SearchPlan, settings: IndexSettings, rows: int, name: str | None = None):
    """CREATE INDEX for ``table`` (named ``name``, index_name(table) by default), and its options."""
    from psycopg import sql

    opclass = plan.column.operator_class(plan.index_type, "hamming" if plan.binary_quantize else plan.metric)
    if settings.method == "hnsw":
        options = {"m": settings.m, "ef_construction": settings.ef_construction}
    else:
        lists = auto_lists(rows) if settings.lists == "auto" else int(settings.lists)
        options = {"lists": lists}
    with_clause = ", ".join(f"{key} = {int(value)}" for key, value in options.items())
    return sql.SQL("CREATE INDEX {name} ON {table} USING {method} ({expression} {opclass}) WITH ({options})").format(
        name=sql.Identifier(name or index_name(table)),
        table=sql.Identifier(table),
        method=sql.SQL(settings.method),
        expression=sql.SQL(plan.expression),
        opclass=sql.SQL(opclass),
        options=sql.SQL(with_clause),
    ), options


def live_index(cursor, table: str) -> dict | None:
    """The index as PostgreSQL reports it, and the statement that built it (kept as its comment)."""
    row = cursor.execute(
        """SELECT pg_get_indexdef(i.indexrelid), i.indisvalid, pg_relation_size(i.indexrelid),
                  obj_description(i.indexrelid, 'pg_class')
           FROM pg_index i WHERE i.indexrelid = to_regclass(%s)""",
        (index_name(table),),
    ).fetchone()
    if row is None:
        return None
    return {"definition": row[0], "valid": row[1], "bytes": row[2], "statement": row[3]}


# lists: auto follows the row count, which every diff load moves a little; an IVFFlat index
# is kept while its lists stay within this factor of what auto asks for now.
AUTO_LISTS_KEPT_WITHIN = 1.25


def with_live_auto_lists(settings: IndexSettings, current: dict | None, rows: int) -> IndexSettings:
    """``settings`` with the live index's lists when auto would give about as many."""
    found = re.search(r"lists='(\d+)'", current["definition"]) if current else None
    if settings.method != "ivfflat" or settings.lists != "auto" or not found:
        return settings
    live, wanted = int(found.group(1)), auto_lists(rows)
    if max(live, wanted) <= AUTO_LISTS_KEPT_WITHIN * min(live, wanted):
        return dataclasses.replace(settings, lists=live)
    return settings


def kept_as_is(current: dict | None, wanted: str) -> bool:
    """The live index already is the one asked for (same statement) and valid."""
    return bool(current and current["valid"] and current["statement"] == wanted)


def index_kept(cursor, table: str, settings: IndexSettings, rows: int) -> bool:
    """Whether build_index would keep ``table``'s live index once it holds ``rows`` rows
    (for a plan: nothing is built)."""
    if settings.method == "none":
        return False
    current = live_index(cursor, table)
    settings = with_live_auto_lists(settings, current, rows)
    statement, _ = create_index_sql(table, plan_for(column_of(cursor, table), settings), settings, rows)
    return kept_as_is(current, statement.as_string(cursor))


def search_settings(settings: IndexSettings, options: dict) -> dict:
    if settings.method == "hnsw":
        return {"hnsw.ef_search": settings.ef_search}
    if settings.method == "ivfflat":
        probes = auto_probes(options["lists"]) if settings.probes == "auto" else int(settings.probes)
        return {"ivfflat.probes": probes}
    return {}


def build_index(connection, table: str, settings: IndexSettings, build: dict,
                remeasure_above: float | None = None, rows: int | None = None) -> dict:
    """Build (or keep) the index of ``table``; returns the marker's facts. A kept index's
    recall is measured again only once diff loads changed more than ``remeasure_above`` of
    its rows since the last measurement (index.remeasure_recall_above; None: every time).
    ``rows``: the table's row count as its load's marker gives it (else counted: a scan)."""
    from psycopg import sql

    from embedflow.serving import store_recall

    with connection.transaction(), connection.cursor() as cursor:
        column = column_of(cursor, table)
        if rows is None:
            rows = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    plan = plan_for(column, settings)
    facts = {"table": table, "rows": rows, "method": settings.method, "metric": plan.metric,
             "column_type": column.sql_type, "index_type": plan.index_type,
             "binary_quantize": plan.binary_quantize}
    if settings.method == "none":
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name(table))))
        return {**facts, "index": None, "definition": None, "build_seconds": None}

    with connection.cursor() as cursor:
        current = live_index(cursor, table)
        settings = with_live_auto_lists(settings, current, rows)
        statement, options = create_index_sql(table, plan, settings, rows)
        wanted = statement.as_string(cursor)
    connection.commit()
    if kept_as_is(current, wanted):
        log.info("index %s already has this definition; kept", index_name(table))
        build_seconds, rebuilt = None, False
    else:
        building, _ = create_index_sql(table, plan, settings, rows, name=staging_index_name(table))
        build_seconds, rebuilt = run_index_build(connection, table, statement, building, build), True
    with connection.cursor() as cursor:
        index = live_index(cursor, table)
    connection.commit()
    searches = search_settings(settings, options)
    recall = None if rebuilt or remeasure_above is None else carried_recall(
        connection, table, rows, searches, settings, remeasure_above)
    if recall is None:
        recall = measure_recall(connection, table, plan, searches, settings)
        with connection.transaction(), connection.cursor() as cursor:
            store_recall(cursor, table, {**recall, "seed": settings.seed, "sample": settings.recall_sample})
    return {
        **facts,
        "index": index_name(table),
        "definition": index["definition"],
        "options": options,
        "index_bytes": index["bytes"],
        "rebuilt": rebuilt,
        "build_seconds": build_seconds,
        "build_settings": build,
        "search_settings": search_settings(settings, options),
        "recall_at_10": recall,
    }


def carried_recall(connection, table: str, rows: int, searches: dict, settings: IndexSettings,
                   remeasure_above: float) -> dict | None:
    """The kept index's last recall, when it was measured as it would be now (search settings,
    sample, seed) and diff loads changed at most ``remeasure_above`` of the rows since; else None."""
    from embedflow.serving import recall_since

    with connection.transaction(), connection.cursor() as cursor:
        stored, changed = recall_since(cursor, table)
    if not stored:
        return None
    stored = dict(stored)
    same_measure = (stored.pop("seed", None), stored.pop("sample", None)) == (settings.seed, settings.recall_sample)
    if not same_measure or {name: stored.get(name) for name in searches} != searches:
        return None
    share = changed / rows if rows else 1.0
    if share > remeasure_above:
        log.info("%s: %d rows (%.2f%%) changed since recall was measured, more than "
                 "index.remeasure_recall_above (%.2f%%): measuring again", table, changed, 100 * share,
                 100 * remeasure_above)
        return None
    log.info("%s: index kept and %d rows (%.2f%%) changed since its recall@10 %s was measured, at most "
             "index.remeasure_recall_above (%.2f%%): carried, not measured again", table, changed, 100 * share,
             stored.get("recall"), 100 * remeasure_above)
    return {**stored, "carried": True, "rows_changed_since": changed}


def run_index_build(connection, table: str, statement, building, build: dict, lock_timeout: str = "60s") -> float:
    """Build the index beside the live one (``building``: ``statement`` under the staging
    index's name), then swap them in one transaction (see the module doc)."""
    from psycopg import sql

    started = time.perf_counter()
    with connection.transaction(), connection.cursor() as cursor:
        set_build_settings(cursor, build)
        cursor.execute(building)  # a SHARE lock: readers go on using the live index meanwhile
        cursor.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout)))
        cursor.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name(table))))
        put_index_in_place(cursor, table, statement.as_string(cursor))
    seconds = time.perf_counter() - started
    log.info("built %s in %.1f s (maintenance_work_mem %s, %s parallel workers)",
             index_name(table), seconds, build["maintenance_work_mem"], build["max_parallel_maintenance_workers"])
    return round(seconds, 3)


def set_build_settings(cursor, build: dict) -> None:
    for name in ("maintenance_work_mem", "max_parallel_maintenance_workers"):
        cursor.execute("SELECT set_config(%s, %s, true)", (name, str(build[name])))


def put_index_in_place(cursor, table: str, statement: str) -> None:
    """Rename ``table``'s staging index to its index's name, and keep the statement that
    defines it (for ``table`` under that name) as its comment: what build_index compares."""
    from psycopg import sql

    cursor.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
        sql.Identifier(staging_index_name(table)), sql.Identifier(index_name(table))))
    cursor.execute(sql.SQL("COMMENT ON INDEX {} IS {}").format(sql.Identifier(index_name(table)), sql.Literal(statement)))


def sample_vectors(connection, table: str, column: VectorColumn, size: int, seed: int) -> list[np.ndarray]:
    """A deterministic sample of the table's own vectors, to use as queries."""
    from psycopg import sql

    with connection.cursor() as cursor:
        rows = cursor.execute(
            sql.SQL("SELECT embedding FROM {} ORDER BY md5(id || %s) LIMIT %s").format(sql.Identifier(table)),
            (str(seed), size),
        ).fetchall()
    connection.commit()
    return [_to_numpy(value) for (value,) in rows]


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, str):  # bit columns come back as '0101…'
        return np.frombuffer(value.encode(), dtype=np.uint8) == ord("1")
    if hasattr(value, "to_numpy"):
        return value.to_numpy()
    return np.asarray(value)


def measure_recall(connection, table: str, plan: SearchPlan, settings: dict, index: IndexSettings, k: int = 10) -> dict:
    """Recall@k of the index against exact search on the table's own vectors.

    A neighbour counts when its exact distance is within the k-th exact
    distance, so ties (common with Hamming distance) are not held against it.
    """
    queries = sample_vectors(connection, table, plan.column, index.recall_sample, index.seed)
    forced = {**settings, "enable_seqscan": "off"}  # measure the index, not the planner's choice
    found = total = 0
    exact_plan = SearchPlan(plan.column, plan.column.type, plan.metric)
    for vector in queries:
        # a longer exact list than k, so that ties at the k-th distance are seen
        exact = search(connection, exact_plan, table, vector, k * 10, exact=True)
        if not exact:
            continue
        threshold = exact[min(k, len(exact)) - 1][1]
        exact_distances = {row_id: distance for row_id, distance, _ in exact}
        approximate = search(connection, plan, table, vector, k, settings=forced)
        found += sum(1 for row_id, _, _ in approximate if exact_distances.get(row_id, math.inf) <= threshold + 1e-6)
        total += min(k, len(exact))
    return {"k": k, "queries": len(queries), "recall": round(found / total, 4) if total else None, **settings}


def main(snakemake) -> None:
    timer = Timer()
    database = DatabaseSettings.from_params(params_json(snakemake, "database"))
    settings = IndexSettings.from_params(params_json(snakemake, "index"))
    build = params_json(snakemake, "build")
    table = snakemake.params.table
    recall = params_json(snakemake, "recall")
    loaded = json.loads(Path(snakemake.input.loaded).read_text())
    with connect(database) as connection:
        facts = build_index(connection, table, settings, build, recall["remeasure_above"], rows=loaded["rows"])
        facts["server"] = server_versions(connection)
    facts["database"] = describe_target(database)
    write_json(snakemake.output.marker, facts)
    write_provenance(
        snakemake.output.marker,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"table": table, "index": params_json(snakemake, "index"), "build (does not change the output)": build,
                "recall (when to measure it again)": recall,
                "database": facts["database"]},
        inputs=[snakemake.input.loaded],
        timing=timer.stop().record(facts["rows"]),
        extra={"server": facts["server"]},
    )


def run(snakemake) -> None:
    run_rule(snakemake, main)
