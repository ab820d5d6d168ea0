"""Stage ``evaluate``: what a model × precision costs in retrieval quality, size and speed.

Queries are encoded once per model (rule ``encode_queries``, on the GPU) in
float32 and then given the same precision treatment as the corpus:
float16 / bfloat16 queries are cast like the corpus; int8 is scored against
the dequantized corpus; binary by Hamming distance of the sign bits, and
again with the top candidates re-scored by the float query against the ±1
bits (sentence-transformers' rescoring, no float corpus needed).

Each file is scored (a) exactly, in memory, streaming the Parquet and keeping
a running top-k per query, and (b) when pgvector can hold the precision,
through the table's index as real SQL at the configured ef_search / probes,
with latency, ANN recall against exact SQL search, and bytes per vector.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from embedflow.atomic import write_json
from embedflow.embeddings_file import iter_batches, read_all, read_metadata
from embedflow.metrics import percentiles, retrieval_metrics
from embedflow.query_set import read_queries
from embedflow.precision import convert, to_float32
from embedflow.provenance import Timer, write_provenance
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.vectors import RunningTopK

log = logging.getLogger(__name__)
TOP_K = 10


# --- (a) exact, in memory -------------------------------------------------------------


def query_as_corpus(queries: np.ndarray, precision: str) -> np.ndarray:
    """The query vectors as the corpus's precision sees them (float32 for scoring)."""
    if precision in ("float16", "bfloat16"):
        return convert(queries, precision).astype(np.float32)
    return queries


def exact_rankings(path: str | Path, query_ids: list[str], queries: np.ndarray, k: int = TOP_K,
                   rescore: int = 0) -> dict[str, list[str]]:
    """Rank the whole file for every query; binary by Hamming distance (re-scored if ``rescore``)."""
    meta = read_metadata(path)
    ranges = meta.ranges_array()
    treated = query_as_corpus(queries, meta.precision)
    keep = max(k, rescore)
    top = RunningTopK(len(query_ids), keep, dtype=np.float64)
    query_bits = (queries > 0).astype(np.float32) * 2 - 1
    for batch in iter_batches(path):
        corpus = to_float32(batch.vectors, meta.precision, meta.dim, ranges)
        if meta.precision == "binary":  # Hamming distance = (dim - <±1, ±1>) / 2; rank by minus it
            scores = -(meta.dim - query_bits @ corpus.T) / 2
        else:
            scores = treated @ corpus.T
        top.add(scores, batch.ids)
    if meta.precision != "binary" or not rescore:
        return {query_id: ranked[:k] for query_id, ranked in top.rankings(query_ids).items()}
    _, everything = read_all(path)  # the candidates' bits, by id (fine for corpora that fit in memory)
    row_of = {chunk_id: row for row, chunk_id in enumerate(everything.ids)}
    rankings = {}
    for row, query_id in enumerate(query_ids):
        candidates = list(top.ids[row])
        bits = to_float32(everything.vectors[[row_of[c] for c in candidates]], "binary", meta.dim)
        order = np.argsort(-(bits @ queries[row]), kind="stable")[:k]
        rankings[query_id] = [candidates[i] for i in order]
    return rankings


# --- (b) through pgvector ---------------------------------------------------------------


def sql_evaluation(connection, table: str, index: dict, query_ids: list[str], queries: np.ndarray,
                   relevant: dict[str, set[str]], k: int = TOP_K) -> dict:
    from psycopg import sql

    from embedflow.index import IndexSettings, column_of, plan_for, search_settings
    from embedflow.search import SearchPlan, search

    settings = IndexSettings.from_params(index)
    with connection.cursor() as cursor:
        column = column_of(cursor, table)
        rows = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
        sizes = cursor.execute(
            "SELECT pg_table_size(to_regclass(%s)), coalesce(pg_relation_size(to_regclass(%s)), 0)",
            (table, f"{table}_embedding_idx"),
        ).fetchone()
    connection.commit()
    plan = plan_for(column, settings)
    lists = settings.lists if settings.lists != "auto" else max(1, rows // 1000)
    options = search_settings(settings, {"lists": lists}) if settings.method != "none" else {}
    exact_plan = SearchPlan(column, column.type, plan.metric)
    ann, exact, latencies = {}, {}, []
    for query_id, vector in zip(query_ids, queries):
        started = time.perf_counter()
        hits = search(connection, plan, table, vector, k, settings=options)
        latencies.append((time.perf_counter() - started) * 1000)
        ann[query_id] = [hit[0] for hit in hits]
        exact[query_id] = [hit[0] for hit in search(connection, exact_plan, table, vector, k, exact=True)]
    overlap = np.mean([len(set(ann[q]) & set(exact[q])) / max(len(exact[q]), 1) for q in query_ids])
    return {
        "table": table,
        "search_settings": options,
        "metrics": retrieval_metrics(ann, relevant),
        "exact_sql_metrics": retrieval_metrics(exact, relevant),
        "ann_recall@10": float(overlap),
        "latency": percentiles(latencies),
        "table_bytes_per_vector": sizes[0] / rows,
        "index_bytes_per_vector": sizes[1] / rows,
    }


# --- the rules -------------------------------------------------------------------------


def answerable(query_ids, queries, relevant, corpus_ids):
    """Keep the relevant ids that were embedded (test mode embeds a sample); drop the
    queries left with none, which no ranking could answer."""
    kept = [i for i, query_id in enumerate(query_ids) if relevant[query_id] & corpus_ids]
    skipped = [query_id for query_id in query_ids if not relevant[query_id] & corpus_ids]
    if skipped:
        log.warning("%d of %d queries have no relevant chunk among the embedded ones and are left out: %s",
                    len(skipped), len(query_ids), ", ".join(skipped[:10]))
    if not kept:
        from embedflow.errors import InputError

        raise InputError("no query has a relevant chunk among the embedded chunks (test_mode.max_chunks too small?)")
    ids = [query_ids[i] for i in kept]
    return ids, queries[kept], {q: relevant[q] & corpus_ids for q in ids}, skipped


def _main(snakemake) -> None:
    timer = Timer()
    settings = params_json(snakemake, "evaluation")
    query_ids, _, relevant = read_queries(snakemake.input.queries)
    query_meta, encoded = read_all(snakemake.input.query_vectors)
    queries = encoded.vectors.astype(np.float32)
    if encoded.ids != query_ids:
        from embedflow.errors import InputError

        raise InputError(f"{snakemake.input.query_vectors} does not match {snakemake.input.queries}: rerun encode_queries")
    path = snakemake.input.parquet
    meta = read_metadata(path)
    corpus_ids = {chunk_id for batch in iter_batches(path) for chunk_id in batch.ids}
    rows = len(corpus_ids)
    query_ids, queries, relevant, skipped = answerable(query_ids, queries, relevant, corpus_ids)
    result = {
        "model": meta.model,
        "precision": meta.precision,
        "dim": meta.dim,
        "rows": rows,
        "queries": len(query_ids),
        "queries_skipped": skipped,
        "parquet_bytes_per_vector": Path(path).stat().st_size / rows,
        "exact": retrieval_metrics(exact_rankings(path, query_ids, queries), relevant),
    }
    if meta.precision == "binary":
        rescored = exact_rankings(path, query_ids, queries, rescore=settings["rerank_candidates"])
        result["exact_rescored"] = retrieval_metrics(rescored, relevant)
    inputs = [path, snakemake.input.queries, snakemake.input.query_vectors]
    if snakemake.input.get("index"):
        from embedflow.database import DatabaseSettings, connect

        database = DatabaseSettings.from_params(params_json(snakemake, "database"))
        with connect(database) as connection:
            result["pgvector"] = sql_evaluation(connection, snakemake.params.table, settings["index"],
                                                query_ids, queries, relevant)
        inputs.append(snakemake.input.index)
    write_json(snakemake.output.report, result)
    log.info("%s %s: exact %s", meta.model, meta.precision, result["exact"])
    write_provenance(
        snakemake.output.report, rule=snakemake.rule, wildcards=dict(snakemake.wildcards),
        config={"evaluation": settings}, inputs=inputs, timing=timer.stop().record(len(query_ids), unit="queries"),
    )


def run(snakemake) -> None:
    """Rule ``evaluate``."""
    run_rule(snakemake, _main)
