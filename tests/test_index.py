"""embedflow.index against the embedded PostgreSQL + pgvector: methods, metrics, casts, rebuilds."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import INDEX_BUILD, search_plan, synthetic_corpus, table_oid
from embedflow.errors import ConfigError
from embedflow.index import IndexSettings, auto_lists, build_index
from embedflow.load import load_table
from embedflow.search import query_value, search, search_sql

METRICS = ("ip", "cosine", "l2")
# hnsw.ef_search's maximum: above the row count, HNSW visits every row it can reach, so
# on these small tables its answer is the exact one.
EF_SEARCH_ALL = 1000


def query_plan(db, plan, table, vector) -> str:
    """PostgreSQL's plan for the search query, with sequential scans discouraged."""
    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")
        explain = db.execute(
            b"EXPLAIN " + search_sql(plan, table).as_bytes(db),
            {"query": query_value(plan.column, vector), "k": 1, "candidates": 1},
        ).fetchall()
    return " ".join(row[0] for row in explain)


def exact_distances(vectors: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """pgvector's distance of every row to the query, by brute force (ip: <#> is -dot)."""
    vectors, query = vectors.astype(np.float64), query.astype(np.float64)
    if metric == "ip":
        return -(vectors @ query)
    if metric == "cosine":
        return 1 - vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    return np.linalg.norm(vectors - query, axis=1)


@pytest.fixture(scope="module")
def spread_corpus(tmp_path_factory):
    """Vectors of unequal lengths, on which the three metrics disagree."""
    folder = tmp_path_factory.mktemp("spread")
    chunks, vectors = synthetic_corpus(folder, 600, 32, seed=1, normalized=False)
    return folder, chunks, vectors


def test_binary_table_answers_hamming_queries(db, db_corpus):
    folder, chunks, vectors = db_corpus
    load_table(db, "t_bits", folder / "embeddings_synthetic_binary.parquet", chunks)
    facts = build_index(db, "t_bits", IndexSettings(), INDEX_BUILD)
    assert "bit_hamming_ops" in facts["definition"] and facts["metric"] == "hamming"
    hits = search(db, search_plan(db, "t_bits"), "t_bits", vectors[42] > 0, k=5)
    assert hits[0][1] == 0 and "c42" in [hit[0] for hit in hits if hit[1] == 0]
    expected = np.count_nonzero((vectors[42] > 0) != (vectors[43] > 0))
    distance = db.execute(
        "SELECT embedding <~> (SELECT embedding FROM t_bits WHERE id = 'c43') FROM t_bits WHERE id = 'c42'"
    ).fetchone()[0]
    assert distance == expected


def test_index_change_rebuilds_only_the_index(db, db_corpus):
    folder, chunks, _ = db_corpus
    load_table(db, "t_idx", folder / "embeddings_synthetic_float32.parquet", chunks)
    oid = table_oid(db, "t_idx")
    first = build_index(db, "t_idx", IndexSettings(ef_construction=32), INDEX_BUILD)
    assert "ef_construction='32'" in first["definition"] and first["rebuilt"]
    same = build_index(db, "t_idx", IndexSettings(ef_construction=32, ef_search=80), INDEX_BUILD)
    assert not same["rebuilt"] and same["search_settings"] == {"hnsw.ef_search": 80}
    second = build_index(db, "t_idx", IndexSettings(ef_construction=48), INDEX_BUILD)
    assert "ef_construction='48'" in second["definition"] and second["rebuilt"]
    ivf = build_index(db, "t_idx", IndexSettings(method="ivfflat", lists=4, probes=4), INDEX_BUILD)
    assert "ivfflat" in ivf["definition"] and ivf["recall_at_10"]["ivfflat.probes"] == 4
    assert ivf["recall_at_10"]["recall"] == 1.0  # every list probed: exact
    assert table_oid(db, "t_idx") == oid
    assert 0.8 <= first["recall_at_10"]["recall"] <= 1.0


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_a_metric_indexes_with_its_operator_class_and_finds_its_exact_neighbours(db, spread_corpus, metric):
    folder, chunks, vectors = spread_corpus
    table = f"t_metric_{metric}"
    load_table(db, table, folder / "embeddings_synthetic_float32.parquet", chunks)
    settings = IndexSettings(metric=metric, ef_search=EF_SEARCH_ALL, recall_sample=10)
    facts = build_index(db, table, settings, INDEX_BUILD)
    assert f"USING hnsw (embedding vector_{metric}_ops)" in facts["definition"] and facts["metric"] == metric
    plan = search_plan(db, table, settings)
    queries = np.random.default_rng(7).normal(size=(5, 32)).astype(np.float32)
    assert "t_metric_" + metric + "_embedding_idx" in query_plan(db, plan, table, queries[0])
    for query in queries:
        hits = search(db, plan, table, query, k=5, settings={"hnsw.ef_search": EF_SEARCH_ALL, "enable_seqscan": "off"})
        distances = exact_distances(vectors, query, metric)
        nearest = np.argsort(distances)[:5]
        assert [hit[0] for hit in hits] == [f"c{i}" for i in nearest]
        np.testing.assert_allclose([hit[1] for hit in hits], distances[nearest], rtol=1e-4, atol=1e-5)
    # On these vectors another metric gives other neighbours, so a wrong one would show above.
    for other in set(METRICS) - {metric}:
        assert any(
            np.argmin(exact_distances(vectors, query, metric)) != np.argmin(exact_distances(vectors, query, other))
            for query in queries
        ), other


def test_ivfflat_automatic_lists_are_rows_per_thousand(db, tmp_path):
    chunks, _ = synthetic_corpus(tmp_path, 3500, 16)
    load_table(db, "t_lists", tmp_path / "embeddings_synthetic_float32.parquet", chunks)
    facts = build_index(db, "t_lists", IndexSettings(method="ivfflat", recall_sample=5), INDEX_BUILD)
    assert "USING ivfflat (embedding vector_ip_ops) WITH (lists='3')" in facts["definition"]
    assert facts["options"] == {"lists": 3}
    # README: rows / 1000 up to 1 M rows (at least one list), √rows beyond
    assert [auto_lists(rows) for rows in (20, 999, 1_000_000, 4_000_000)] == [1, 1, 1000, 2000]


def test_large_float32_gets_a_halfvec_expression_index(db, tmp_path):
    chunks, vectors = synthetic_corpus(tmp_path, 200, 2560)
    load_table(db, "t_qwen", tmp_path / "embeddings_synthetic_float32.parquet", chunks)
    facts = build_index(db, "t_qwen", IndexSettings(recall_sample=20), INDEX_BUILD)
    assert "(embedding)::halfvec(2560)" in facts["definition"] and "halfvec_ip_ops" in facts["definition"]
    the_plan = search_plan(db, "t_qwen")
    hits = search(db, the_plan, "t_qwen", vectors[9], k=1, settings={"enable_seqscan": "off"})
    assert hits[0][0] == "c9"
    assert "t_qwen_embedding_idx" in query_plan(db, the_plan, "t_qwen", vectors[9])
    with pytest.raises(ConfigError, match="at most 2000 dims of vector"):
        build_index(db, "t_qwen", IndexSettings(halfvec_for_large=False), INDEX_BUILD)


def test_binary_quantize_index_reranks_on_the_full_vector(db, db_corpus):
    folder, chunks, vectors = db_corpus
    load_table(db, "t_bq", folder / "embeddings_synthetic_float32.parquet", chunks)
    facts = build_index(db, "t_bq", IndexSettings(binary_quantize=True, rerank_candidates=200), INDEX_BUILD)
    assert "binary_quantize(embedding))::bit(32)" in facts["definition"]
    hits = search(db, search_plan(db, "t_bq", IndexSettings(binary_quantize=True)), "t_bq", vectors[5], k=3)
    assert hits[0][0] == "c5" and hits[0][1] == pytest.approx(-1, abs=1e-5)  # re-ranked by inner product
